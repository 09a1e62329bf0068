// Package dashboard tests prefork's dashboard (-admin) in a real browser:
// headless Chromium, driven by chromedp, against the real supervisor and
// demo worker on 127.0.0.1. It is a module of its own, as deploy/ is, so
// that the main module does not depend on chromedp.
//
//	cd dashboard && go test ./...
//
// The tests need Debian's chromium (or another Chromium or Chrome on PATH);
// make test-deps installs it.
package dashboard
