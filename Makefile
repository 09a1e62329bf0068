GO      ?= go
BIN     := bin
LISTEN  ?= :3000
WORKERS ?=

.PHONY: build run run-node run-socketio run-fasthttp test test-deps chaos bench bench-tools bench-latency bench-keepalive clean

# The supervisor as it ships (scripts/build-supervisor, which the tests use
# too): linked under a C main when a C compiler is there, so that no signal
# sent during an in-place upgrade is fatal or lost; a Go executable, with a
# note, otherwise.
build:
	GO=$(GO) scripts/build-supervisor $(BIN)/supervisor
	$(GO) build -o $(BIN)/worker ./cmd/worker
	$(GO) build -o $(BIN)/singlebinary ./bench/singlebinary
	$(GO) build -o $(BIN)/sdsocket ./bench/sdsocket
	# The fasthttp worker is its own module (examples/fasthttp), so that
	# prefork's go.mod does not depend on fasthttp.
	cd examples/fasthttp && $(GO) build -o ../../$(BIN)/fasthttp-worker .

run: build
	./$(BIN)/supervisor -listen $(LISTEN) $(if $(WORKERS),-workers $(WORKERS))

# The Node.js cluster example, unmodified, as prefork's workers (needs node).
# PORT=0: the app listens on whatever port the supervisor was given.
run-node: build
	PORT=0 ./$(BIN)/supervisor -listen $(LISTEN) $(if $(WORKERS),-workers $(WORKERS)) -- node examples/node/app.js

# The socket.io example (examples/socketio, written for @socket.io/sticky)
# under -sticky socketio; npm ci there first (make test-deps does).
run-socketio: build
	./$(BIN)/supervisor -listen $(LISTEN) -workers $(or $(WORKERS),4) -sticky socketio -- node examples/socketio/app.js

# The demo's routes on fasthttp (examples/fasthttp, package fastcluster) as
# the workers.
run-fasthttp: build
	./$(BIN)/supervisor -listen $(LISTEN) $(if $(WORKERS),-workers $(WORKERS)) -- ./$(BIN)/fasthttp-worker

# What the tests run besides Go (Node.js, Python's gunicorn and uvicorn,
# util-linux, Chromium, systemd-analyze, the test apps' npm packages):
# installed with apt-get as root on Debian, else named in one line.
test-deps:
	@scripts/deps test

# Race-built test binaries, and the race-built processes they start, exit at
# once: by default the race detector sleeps a second at every exit (GORACE
# atexit_sleep_ms), a second per test package, helper, worker, stop and ctl
# call. A race is still reported, and fails its test, when it happens.
RACE := GORACE="atexit_sleep_ms=0 $$GORACE"

test: test-deps
	$(GO) vet ./...
	# The end-to-end tests first: go test starts packages in the order
	# given, two at a time, and the longest should not wait for a minute of
	# others before it; they run beside it.
	$(RACE) $(GO) test -race -count=1 -timeout 10m -skip '^TestAdminEventFlood$$' ./internal/e2e $$($(GO) list ./... | grep -v -e /internal/chaos -e /internal/e2e)
	# ctl status within 100 ms under a flood is a latency bound: measured
	# alone, not beside another package's processes on 2 cores.
	$(RACE) $(GO) test -race -count=1 -timeout 2m -run '^TestAdminEventFlood$$' ./internal/e2e
	# The fault suite on its own: run beside the end-to-end tests, two
	# suites of real processes on 2 cores make each other's timings noisy.
	$(RACE) $(GO) test -race -count=1 -timeout 5m ./internal/chaos
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...
	cd fastcluster && $(GO) vet ./... && $(RACE) $(GO) test -race -count=1 -timeout 2m ./...
	cd examples/fasthttp && $(GO) vet ./...
	cd bench/loadgen && $(GO) vet ./... && $(GO) test -count=1 -timeout 2m ./...
	# The dashboard in headless Chromium.
	cd dashboard && $(GO) vet ./... && $(GO) test -count=1 -timeout 3m ./...

# The fault suite at full counts (a few minutes): kill loops, reload and
# scale storms, leaks, floods, a hostile worker, control-socket abuse and a
# stopped worker, in every mode, on 127.0.0.1. make test runs it short.
chaos:
	@mkdir -p $(BIN)
	@PREFORK_CHAOS=long $(GO) test -count=1 -timeout 10m -v ./internal/chaos >$(BIN)/chaos.out 2>&1; rc=$$?; \
	grep -E '^\s*--- |FIGURE|_test.go:[0-9]+: ' $(BIN)/chaos.out | grep -v 'supervisor output'; \
	echo "chaos: full log in $(BIN)/chaos.out"; exit $$rc

bench-tools:
	@scripts/deps bench

bench: build bench-tools
	$(GO) run ./bench -go $(GO) $(BENCHFLAGS)

# Only the open-loop latency table, 3 reps (about 8 minutes): go-single's maximum,
# then every server at fixed rates with bench/loadgen (vegeta, built by the
# harness from its own module).
bench-latency: build bench-tools
	$(GO) run ./bench -go $(GO) -no-load -no-lifecycle -no-micro -lat-reps 3 $(BENCHFLAGS)

# Only the keep-alive table (about a minute): POSTs on keep-alive
# connections through reloads, prefork with and without hand-back, one Go
# process behind a held socket, Node's cluster reload pattern.
bench-keepalive: build bench-tools
	$(GO) run ./bench -go $(GO) -no-load -no-lifecycle -no-micro -no-latency $(BENCHFLAGS)

clean:
	rm -rf $(BIN)
