package nodeipc_test

import (
	"fmt"
	"os"

	"github.com/prefork/prefork/internal/nodeipc"
)

// Two ends of a channel in one process: the handle message is acknowledged
// by the receiving Recv, and only then does the sender write what follows it.
func Example() {
	a, remote, err := nodeipc.Pair()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	b, err := nodeipc.NewChannel(remote)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	go func() { // a reads the ACK
		for {
			if _, err := a.Recv(); err != nil {
				return
			}
		}
	}()

	r, w, _ := os.Pipe() // any descriptor will do
	defer r.Close()
	defer w.Close()
	type newconn struct {
		Cmd string `json:"cmd"`
		Act string `json:"act"`
		Key string `json:"key"`
	}
	a.Send(newconn{"NODE_CLUSTER", "newconn", "k"}, int(r.Fd()))
	a.Send(map[string]int{"hello": 1}, -1)

	m, _ := b.Recv()
	fmt.Println(string(m.Body), m.Handle, m.FD >= 0, m.Internal())
	os.NewFile(uintptr(m.FD), "received").Close()
	m, _ = b.Recv()
	fmt.Println(string(m.Body), m.FD, m.Internal())
	// Output:
	// {"cmd":"NODE_CLUSTER","act":"newconn","key":"k"} net.Native true true
	// {"hello":1} -1 false
}
