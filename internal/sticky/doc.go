// Package sticky is the logic of sticky sessions, apart from any socket:
// how a connection's key is found in its first bytes (Key), how a key maps
// to a slot (Pick, rendezvous hashing) and the table of keys workers
// claimed (Table). internal/handoff peeks the bytes and routes; this
// package only decides. It has no goroutines and no locks of its own
// except the Table's.
//
//	k, err := sticky.ParseKey("cookie:sid")
//	key, more := k.Find(head, peer) // more: not found yet, peek again later
//	slot, ok := sticky.Pick(key, []int{0, 1, 2, 3})
//
// A new kind of key is one file: a func init that calls RegisterKey (the
// socketio key, reading engine.io's sid query parameter, is one).
//
// # Where to read
//
//	key.go      Key, ParseKey, RegisterKey; the ip kind
//	http.go     the kinds read from an HTTP request head: cookie, header, query
//	socketio.go the socketio kind: engine.io's sid, claimed by the workers
//	hash.go     Pick: rendezvous (highest random weight) hashing over slots
//	table.go    Table: claimed keys, bounded in size (LRU) and age
package sticky
