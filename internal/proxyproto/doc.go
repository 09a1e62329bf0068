// Package proxyproto reads the PROXY protocol header (HAProxy's, versions
// 1 and 2) that a load balancer sends first on each connection it opens,
// to say which client it carries. The supervisor reads it in rr mode
// before it picks a worker (internal/handoff); both trust only the
// sources -proxy-from names.
//
//	n, src, err := proxyproto.Parse(peeked) // ErrIncomplete: read more
//	if err == nil { consume n bytes; src is the client }
//
// # Where to read
//
//	parse.go   Parse: the v1 text and v2 binary headers
//	trust.go   Trust: the -proxy-from sources; Peer, an address as a conns frame carries it
package proxyproto
