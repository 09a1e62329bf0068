//go:build unix

package reaper_test

import (
	"fmt"
	"os/exec"

	"github.com/prefork/prefork/internal/reaper"
)

func ExampleOwned() {
	var owned reaper.Owned // pass owned.Has to reaper.Run as isOwn

	cmd := exec.Command("true")
	if err := owned.Start(cmd); err != nil { // instead of cmd.Start
		fmt.Println(err)
		return
	}
	pid := cmd.Process.Pid
	fmt.Println("claimed while running:", owned.Has(pid))

	cmd.Wait()        // collects the exit status; Reap never does
	owned.Forget(pid) // only after Wait has returned
	fmt.Println("claimed after Wait:", owned.Has(pid))
	// Output:
	// claimed while running: true
	// claimed after Wait: false
}
