// Package listener creates the supervisor's listening sockets and the
// duplicates that workers inherit.
//
// The supervisor binds every socket itself, so that it can bind a privileged
// port and run workers as another user, and so that nothing but the
// supervisor decides the listening address:
//
//   - [ParseSpec] and [ParseSpecs] read -listen values ([Spec]: a name and
//     HOST:PORT, unix:/path or fd:N), and [Bind] and [BindAll] bind them
//     (spec.go, bind.go): a Unix socket file replaces only a stale one
//     (nothing answers on it), never a file that is not a socket, and
//     [Socket.Remove] removes it only while it is still the one bound;
//
//   - [Listen] binds one TCP socket (rr and shared mode);
//
//   - [ListenReusePort] binds n SO_REUSEPORT sockets to one address, one per
//     worker slot (reuseport mode); [Steer] keeps new connections off some
//     of them and [Unlisten] takes a drained one out of the group;
//
//   - [Activated] takes the sockets passed by systemd socket activation
//     (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES);
//
//   - [Dup] makes the close-on-exec duplicate that exec.Cmd.ExtraFiles takes.
//
//     ln, err := listener.Listen("127.0.0.1:3000")
//     if err != nil { ... }            // "address already in use" names the port
//     f, err := listener.Dup(ln)       // for cmd.ExtraFiles; close after Start
//
// Linux only.
package listener

import _ "github.com/prefork/prefork/internal/linuxonly" // fails to build on any other GOOS
