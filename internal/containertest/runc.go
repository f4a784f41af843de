package containertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
)

// startTimeout bounds how long a container may take to start, and how long
// Wait waits for it to end.
const startTimeout = 30 * time.Second

// Container is a container that `runc run` runs in the foreground: runc
// stays its parent, so its exit status comes back through runc's.
type Container struct {
	ID  string
	PID int // the container's init process, in the host's pid namespace

	runc   string
	root   string // runc's state directory, private to the test
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{}
	err    error // runc's exit, valid once done is closed
}

// RunC runs the bundle as container id and returns once its init process
// exists (its PID and cgroups are then final). The container's stdout and
// stderr are kept for Output. Cleanup kills and deletes the container and
// removes the cgroup directories it created.
func RunC(t *testing.T, id, bundle string) *Container {
	t.Helper()
	runc := testnet.RequireHost(t, "runc")[0]
	cgroupsPath, err := bundleCgroupsPath(bundle)
	if err != nil {
		t.Fatalf("reading the bundle's spec: %v", err)
	}
	// runc deletes the container's own cgroup; the parents it made are ours to remove.
	created := missingCgroupDirs(t, cgroupsPath)

	c := &Container{ID: id, runc: runc, root: t.TempDir(), output: &syncBuffer{}, done: make(chan struct{})}
	pidFile := filepath.Join(t.TempDir(), "pid")
	c.cmd = exec.Command(runc, "--root", c.root, "run", "--bundle", bundle, "--pid-file", pidFile, id)
	c.cmd.Stdout, c.cmd.Stderr = c.output, c.output
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting runc for container %s: %v", id, err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.remove(t)
		removeCgroupDirs(t, created)
	})

	deadline := time.Now().Add(startTimeout)
	for {
		// runc writes the pid file once the process has exec'd its args.
		if c.PID = readPIDFile(pidFile); c.PID > 0 {
			break
		}
		select {
		case <-c.done:
			if c.PID = readPIDFile(pidFile); c.PID > 0 {
				return c // it ran and has ended already
			}
			t.Fatalf("container %s did not start: %v; runc said: %s", id, c.err, c.output)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: no pid file after %v; runc said: %s", id, startTimeout, c.output)
		}
	}
	return c
}

// Wait waits for the container's process to exit and returns runc's
// verdict on it: nil for exit status 0, an *exec.ExitError otherwise.
func (c *Container) Wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(startTimeout):
		t.Fatalf("container %s still runs after %v; output so far: %s", c.ID, startTimeout, c.output)
		return nil
	}
}

// Output is what the container wrote to stdout and stderr so far.
func (c *Container) Output() string { return c.output.String() }

// remove kills the container if it still runs and deletes it from runc's
// state, so its cgroups go too.
func (c *Container) remove(t *testing.T) {
	select {
	case <-c.done:
	default:
		if out, err := exec.Command(c.runc, "--root", c.root, "kill", c.ID, "KILL").CombinedOutput(); err != nil {
			t.Logf("killing container %s: %v: %s", c.ID, err, out)
		}
		select {
		case <-c.done:
		case <-time.After(startTimeout):
			t.Errorf("container %s: runc did not exit %v after SIGKILL", c.ID, startTimeout)
			_ = c.cmd.Process.Kill()
		}
	}
	if out, err := exec.Command(c.runc, "--root", c.root, "delete", "--force", c.ID).CombinedOutput(); err != nil &&
		!bytes.Contains(out, []byte("does not exist")) {
		t.Errorf("deleting container %s: %v: %s", c.ID, err, out)
	}
}

// readPIDFile returns the pid runc wrote, or 0 while there is none.
func readPIDFile(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0
	}
	return pid
}

// bundleCgroupsPath reads linux.cgroupsPath from a bundle's spec.
func bundleCgroupsPath(bundle string) (string, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", err
	}
	var s struct {
		Linux struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return "", fmt.Errorf("decoding config.json: %w", err)
	}
	if strings.Contains(s.Linux.CgroupsPath, ":") {
		return "", errors.New("cgroupsPath is in the systemd driver's slice:prefix:name form, which needs systemd running")
	}
	return s.Linux.CgroupsPath, nil
}

// syncBuffer is a bytes.Buffer that runc's output copier and the test may
// use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
