package cri

import (
	"context"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI speaks the CRI v1 protocol for the two calls the cache makes,
// answering from what the test put in it.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	mu         sync.Mutex
	sandboxes  []*runtimeapi.PodSandbox
	containers []*runtimeapi.Container
	listedAt   []time.Time // when each ListPodSandbox arrived
	stall      *stall      // when set, ListPodSandbox stalls until released
}

// stall holds calls inside the server until the test releases them.
type stall struct {
	entered, release, left chan struct{}
	enter, leave           sync.Once
}

func newStall() *stall {
	return &stall{entered: make(chan struct{}), release: make(chan struct{}), left: make(chan struct{})}
}

func (f *fakeCRI) ListPodSandbox(ctx context.Context, _ *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	f.listedAt = append(f.listedAt, time.Now())
	s := f.stall
	items := f.sandboxes
	f.mu.Unlock()
	if s != nil {
		s.enter.Do(func() { close(s.entered) })
		<-s.release // deaf to ctx: a runtime stuck in a lock is
		s.leave.Do(func() { close(s.left) })
		f.mu.Lock()
		f.stall = nil
		f.mu.Unlock()
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

func (f *fakeCRI) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &runtimeapi.ListContainersResponse{Containers: f.containers}, nil
}

func (f *fakeCRI) add(c *runtimeapi.Container) {
	f.mu.Lock()
	f.containers = append(f.containers, c)
	f.mu.Unlock()
}

func (f *fakeCRI) stallAll() *stall {
	s := newStall()
	f.mu.Lock()
	f.stall = s
	f.mu.Unlock()
	return s
}

func (f *fakeCRI) listings() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.listedAt...)
}

// serve runs f on a unix socket at path until stop (or the test's end).
func serve(t *testing.T, f *fakeCRI, path string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("listening on %s: %v", path, err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop() // closes the listener, which removes the socket file
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// startCache runs a cache against endpoint until the test ends.
func startCache(t *testing.T, o Options) (*Cache, *testnet.SyncBuffer) {
	t.Helper()
	log := &testnet.SyncBuffer{}
	o.Log = log
	c := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c, log
}

// waitFor waits for the background listing to reach a state; the bound
// only keeps a broken cache from hanging the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func socketIn(t *testing.T) string { return filepath.Join(t.TempDir(), "cri.sock") }

// The ids of the test's pod: 64 hex digits, as containerd and CRI-O make them.
const (
	sandboxID = "5f0c2e6a1b7d4c3e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"
	apiID     = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	infraID   = "0000000000000000000000000000000000000000000000000000000000000001"
	plainID   = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
	lateID    = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
	strayID   = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
	podUID    = "6d1f8a4e-3b2c-4d5e-9f01-23456789abcd"
)

var (
	checkout = Names{Pod: "checkout-7d9f8b6c5-x2x9q", PodNamespace: "payments", PodUID: podUID}
	api      = Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "api"}
)

func kubeletLabels(n Names) map[string]string {
	return map[string]string{
		labelPodName: n.Pod, labelPodNamespace: n.PodNamespace,
		labelPodUID: n.PodUID, labelContainerName: n.Container,
		"app": "checkout",
	}
}

// checkoutPod is a node with one pod as the kubelet makes it: its sandbox,
// its "api" container, and (cri-dockerd's way) an infra container.
func checkoutPod() *fakeCRI {
	return &fakeCRI{
		sandboxes: []*runtimeapi.PodSandbox{{
			Id:       sandboxID,
			Metadata: &runtimeapi.PodSandboxMetadata{Name: checkout.Pod, Namespace: "payments", Uid: podUID},
			State:    runtimeapi.PodSandboxState_SANDBOX_READY,
			Labels:   kubeletLabels(checkout),
		}},
		containers: []*runtimeapi.Container{
			{Id: apiID, PodSandboxId: sandboxID, Metadata: &runtimeapi.ContainerMetadata{Name: "api"}, Labels: kubeletLabels(api)},
			{Id: infraID, PodSandboxId: sandboxID, Metadata: &runtimeapi.ContainerMetadata{Name: "POD"},
				Labels: kubeletLabels(Names{Pod: checkout.Pod, PodNamespace: "payments", PodUID: podUID, Container: "POD"})},
		},
	}
}
