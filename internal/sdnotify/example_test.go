package sdnotify_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/prefork/prefork/internal/sdnotify"
)

func ExampleNotifier() {
	// Play systemd: listen where NOTIFY_SOCKET points.
	dir, _ := os.MkdirTemp("", "sdnotify-example")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	systemd, _ := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	defer systemd.Close()
	os.Setenv("NOTIFY_SOCKET", sock)

	n := sdnotify.New()
	sdnotify.Unsetenv() // workers spawned from here on do not see the socket
	n.Ready("2 workers ready")

	buf := make([]byte, 512)
	k, _ := systemd.Read(buf)
	fmt.Printf("%s\n", buf[:k])
	_, inherited := os.LookupEnv("NOTIFY_SOCKET")
	fmt.Println("inherited by workers:", inherited)
	// Output:
	// READY=1
	// STATUS=2 workers ready
	// inherited by workers: false
}
