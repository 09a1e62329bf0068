package procfs_test

import (
	"fmt"
	"os"

	"github.com/prefork/prefork/internal/procfs"
)

func ExampleParseStat() {
	// A process may name itself anything, parentheses included.
	line := "4243 (my (odd) name) S 4242 4243 4243 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 98765 1000000 2048\n"
	st, err := procfs.ParseStat([]byte(line))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d %q state %c parent %d, %d threads\n", st.PID, st.Comm, st.State, st.PPID, st.NumThreads)
	fmt.Printf("CPU %.1fs, started %ds after boot\n", float64(st.CPUTicks())/procfs.ClockTicks, st.StartTime/procfs.ClockTicks)
	// Output:
	// 4243 "my (odd) name" state S parent 4242, 8 threads
	// CPU 3.0s, started 987s after boot
}

func ExampleReadStat() {
	st, err := procfs.ReadStat(os.Getpid())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.PID == os.Getpid(), st.PPID == os.Getppid(), st.Exited())
	// Output: true true false
}
