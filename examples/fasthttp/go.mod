module github.com/prefork/prefork/examples/fasthttp

go 1.26.0

require (
	github.com/prefork/prefork v0.0.0
	github.com/prefork/prefork/fastcluster v0.0.0
	github.com/valyala/fasthttp v1.78.0
)

require (
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/molecule-man/go-brrr v1.3.1 // indirect
	github.com/pelletier/go-toml/v2 v2.4.3 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace (
	github.com/prefork/prefork => ../..
	github.com/prefork/prefork/fastcluster => ../../fastcluster
)
