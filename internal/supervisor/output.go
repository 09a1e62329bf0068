package supervisor

import (
	"bufio"
	"io"
	"os"

	"go.uber.org/zap"
)

// outputCapture re-emits a worker's stdout and stderr through the
// supervisor's logger, a line at a time, with the slot and pid as fields
// (-worker-output capture).
type outputCapture struct {
	stdoutR, stdoutW *os.File
	stderrR, stderrW *os.File
}

func newOutputCapture() (*outputCapture, error) {
	c := &outputCapture{}
	var err error
	if c.stdoutR, c.stdoutW, err = os.Pipe(); err != nil {
		return nil, err
	}
	if c.stderrR, c.stderrW, err = os.Pipe(); err != nil {
		c.stdoutR.Close()
		c.stdoutW.Close()
		return nil, err
	}
	return c, nil
}

// started closes the write ends (the child has its own copies) and, if the
// child runs, starts a reader per stream; a reader ends at EOF, when the
// worker and anything it started have closed the pipe.
func (c *outputCapture) started(ok bool, log *zap.Logger, slot, pid int) {
	c.stdoutW.Close()
	c.stderrW.Close()
	if !ok {
		c.stdoutR.Close()
		c.stderrR.Close()
		return
	}
	l := log.Named("worker").With(zap.Int("slot", slot), zap.Int("pid", pid))
	go relay(c.stdoutR, l, "stdout")
	go relay(c.stderrR, l, "stderr")
}

func relay(r io.ReadCloser, log *zap.Logger, stream string) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		log.Info(sc.Text(), zap.String("stream", stream))
	}
}
