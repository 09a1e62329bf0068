GO      ?= go
BIN     := bin
LISTEN  ?= :3000
WORKERS ?=

.PHONY: build run test bench clean

build:
	$(GO) build -o $(BIN)/supervisor ./cmd/supervisor
	$(GO) build -o $(BIN)/worker ./cmd/worker

run: build
	./$(BIN)/supervisor -listen $(LISTEN) $(if $(WORKERS),-workers $(WORKERS))

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 10m ./...
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

clean:
	rm -rf $(BIN)
