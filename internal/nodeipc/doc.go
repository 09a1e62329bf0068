// Package nodeipc speaks Node.js's child-process IPC and the cluster protocol
// on it, so that the supervisor can run an unmodified Node cluster app as a
// worker, in the place of the Node primary that would fork it.
//
// # The channel
//
// child_process.fork gives the child one end of a SOCK_STREAM unix
// socketpair and names it in NODE_CHANNEL_FD; NODE_CHANNEL_SERIALIZATION_MODE
// is "json" (see Environ). Each message is JSON.stringify(message) + "\n".
// A message sent with a handle is wrapped,
//
//	{"cmd":"NODE_HANDLE","type":"net.Native","msg":MESSAGE}
//
// and the descriptor rides as SCM_RIGHTS on the write that carries the
// line's first byte. The receiver answers {"cmd":"NODE_HANDLE_ACK"} (or
// NODE_HANDLE_NACK when the descriptor did not arrive, and the sender tries
// again, three times at most); the sender writes nothing else but ACKs and
// NACKs until then, so one handle is in flight at a time. Messages whose cmd
// begins with "NODE_" are internal; the others are the application's
// ('message' events). Channel implements all of this (Node:
// lib/internal/child_process.js setupChannel, handleConversion;
// lib/internal/child_process/serialization.js json).
//
// # The cluster protocol
//
// With NODE_UNIQUE_ID set, a Node process running a script is a cluster
// worker. Its cluster messages are {"cmd":"NODE_CLUSTER","act":...,"seq":N};
// a reply to one carries "ack":N (lib/internal/cluster/utils.js sendHelper).
// Worker answers them the way Node's primary does
// (lib/internal/cluster/primary.js, round_robin_handle.js,
// shared_handle.js, and child.js for the worker's side):
//
//	worker → primary                      primary → worker
//	act:"online"
//	act:"queryServer" (address, port,     errno:null, key, ack, data, sockname   round robin
//	  addressType, fd, index, backlog…)   errno:0, key, ack, data + the listening socket as a handle   shared
//	act:"listening" (… port)
//	                                      act:"newconn", key + the connection as a handle
//	ack, accepted:true|false
//	act:"close", key                      (the worker closed that server)
//	                                      act:"disconnect": close every server, then the channel
//	act:"exitedAfterDisconnect"           ack
//
// A worker told to disconnect closes its servers and then the channel, and
// exits by itself once nothing else keeps its event loop alive.
//
// # Example
//
//	ch, remote, err := nodeipc.Pair()
//	cmd := exec.Command("node", "app.js")
//	cmd.ExtraFiles = []*os.File{remote} // fd 3
//	cmd.Env = append(os.Environ(), nodeipc.Environ(3, 1)...)
//	err = cmd.Start()
//	remote.Close()
//	events := make(chan nodeipc.Event, 16)
//	w := nodeipc.NewWorker(ch, events)
//	for ev := range events {
//		switch e := ev.Value.(type) {
//		case nodeipc.QueryServer:
//			w.ReplyRoundRobin(e, &nodeipc.Sockname{Address: "127.0.0.1", Family: "IPv4", Port: 3000})
//		case nodeipc.Refused:
//			// hand e.FD to another worker
//		}
//	}
//	// and for each connection accepted on port 3000: w.NewConn(key, fd)
//
// The runnable example below shows the channel between two Go ends.
//
// Linux only.
package nodeipc

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
