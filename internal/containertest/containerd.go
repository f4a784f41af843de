package containertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/twtrace/twtrace/internal/testnet"
)

// The images every containerd fixture imports: the pod sandbox's pause
// container and the pods' containers, both busybox.
const (
	PauseImage   = "localhost/twtrace/pause:test"
	BusyboxImage = "localhost/twtrace/busybox:test"
)

// snapshotter is overlayfs: the kernel's overlay works on this host's
// ext4 /tmp, and it is what nodes run.
const snapshotter = "overlayfs"

// CRI is a containerd the test started, with its CRI plugin serving.
type CRI struct {
	Endpoint string // "unix:///…/containerd.sock"
	Runtime  runtimeapi.RuntimeServiceClient
	Images   runtimeapi.ImageServiceClient

	dir    string
	socket string
	log    string
	proc   *os.Process
}

// Freeze stops containerd (SIGSTOP): its CRI accepts connections and never
// answers, as a runtime that hangs. The containers it started keep
// running (their shims are separate processes). thaw resumes it; cleanup
// thaws it too.
func (c *CRI) Freeze(t *testing.T) (thaw func()) {
	t.Helper()
	if err := c.proc.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("freezing containerd: %v", err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { _ = c.proc.Signal(syscall.SIGCONT) }) }
	t.Cleanup(thaw)
	return thaw
}

// Containerd starts containerd as a node runs it for the kubelet: the CRI
// plugin enabled, the cgroupfs driver, a locally built pause image as the
// sandbox image (imported with BusyboxImage), and a base runtime spec
// without rlimits (see Bundle). Root, state, socket and the runc state are
// private to the test; cleanup stops containerd and removes them.
//
// restrict_oom_score_adj keeps containers' oom_score_adj at or above
// containerd's own: the CRI gives a sandbox -998, and lowering it needs
// CAP_SYS_RESOURCE. Without that capability runc's nsexec fails
// ("failed to update /proc/self/oom_score_adj: Permission denied"), which
// RunPodSandbox reports only as "can't get final child's PID from pipe: EOF".
func Containerd(t *testing.T) *CRI {
	t.Helper()
	busybox := requireStaticBusybox(t, "containerd", "ctr", "containerd-shim-runc-v2", "runc")
	bins := testnet.RequireHost(t, "containerd", "ctr")
	// Not t.TempDir: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "twt-containerd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &CRI{dir: dir, socket: filepath.Join(dir, "containerd.sock"), log: filepath.Join(dir, "containerd.log")}
	c.Endpoint = "unix://" + c.socket
	config, err := c.writeConfig(bins[1])
	if err != nil {
		t.Fatalf("writing containerd's config: %v", err)
	}
	logFile, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins[0], "--config", config)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	c.proc = cmd.Process
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logFile.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(startTimeout):
			t.Errorf("containerd did not stop %v after SIGTERM; killing it", startTimeout)
			_ = cmd.Process.Kill()
			<-exited
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing containerd's directory: %v", err)
		}
	})

	conn, err := grpc.NewClient(c.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dialling containerd's CRI at %s: %v", c.Endpoint, err)
	}
	t.Cleanup(func() { conn.Close() })
	c.Runtime = runtimeapi.NewRuntimeServiceClient(conn)
	c.Images = runtimeapi.NewImageServiceClient(conn)
	c.waitReady(t, exited)
	c.importImages(t, bins[1], busybox)
	return c
}

// writeConfig writes containerd's config (version 2, containerd 1.6) and
// the base runtime spec: containerd's default spec (`ctr oci spec`) with
// its rlimits removed.
func (c *CRI) writeConfig(ctr string) (string, error) {
	out, err := exec.Command(ctr, "oci", "spec").Output()
	if err != nil {
		return "", fmt.Errorf("ctr oci spec: %w", err)
	}
	var base map[string]any
	if err := json.Unmarshal(out, &base); err != nil {
		return "", fmt.Errorf("decoding ctr oci spec's output: %w", err)
	}
	if process, ok := base["process"].(map[string]any); ok {
		delete(process, "rlimits")
	}
	baseJSON, _ := json.Marshal(base)
	baseSpec := filepath.Join(c.dir, "base-spec.json")
	if err := os.WriteFile(baseSpec, baseJSON, 0o644); err != nil {
		return "", err
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = %q
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      base_runtime_spec = %q
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %q
`, filepath.Join(c.dir, "root"), filepath.Join(c.dir, "state"), c.socket, PauseImage, snapshotter,
		baseSpec, filepath.Join(c.dir, "runc"))
	path := filepath.Join(c.dir, "config.toml")
	return path, os.WriteFile(path, []byte(config), 0o644)
}

// waitReady waits until the CRI answers Version and reports the runtime
// ready (the network is not: host-network pods need no CNI).
func (c *CRI) waitReady(t *testing.T, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Runtime.Status(ctx, &runtimeapi.StatusRequest{})
		cancel()
		if err == nil && runtimeReady(st) {
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("containerd exited at start: %v; its log:\n%s", err, c.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd's CRI not ready after %v (last: %v, %v); its log:\n%s", startTimeout, st, err, c.logTail())
		}
	}
}

func runtimeReady(st *runtimeapi.StatusResponse) bool {
	for _, cond := range st.GetStatus().GetConditions() {
		if cond.Type == runtimeapi.RuntimeReady {
			return cond.Status
		}
	}
	return false
}

// importImages imports the pause and busybox images into the k8s.io
// namespace, where the CRI plugin keeps its images, unpacked for its
// snapshotter.
func (c *CRI) importImages(t *testing.T, ctr, busybox string) {
	t.Helper()
	var archive bytes.Buffer
	err := WriteImageArchive(&archive, busybox,
		Image{Name: PauseImage, Entrypoint: []string{"/bin/sleep", "2147483647"}},
		Image{Name: BusyboxImage, Entrypoint: []string{"/bin/sh"}})
	if err != nil {
		t.Fatalf("building the images: %v", err)
	}
	cmd := exec.Command(ctr, "-a", c.socket, "-n", "k8s.io", "images", "import", "--snapshotter", snapshotter, "-")
	cmd.Stdin = &archive
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v: %s", err, out)
	}
	// The CRI plugin learns of images through containerd's events.
	deadline := time.Now().Add(startTimeout)
	for _, ref := range []string{PauseImage, BusyboxImage} {
		for {
			st, err := c.Images.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && st.GetImage() != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the CRI does not see image %s after %v: %v", ref, startTimeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// logTail is the end of containerd's log, for failure messages.
func (c *CRI) logTail() string {
	data, _ := os.ReadFile(c.log)
	if len(data) > 4096 {
		data = data[len(data)-4096:]
	}
	return string(data)
}

// PodSpec is a pod of one container as the kubelet sees it.
type PodSpec struct {
	Name, Namespace, UID string
	Container            string   // the container's name
	Args                 []string // run by the busybox image: Args[0] is the command
}

// Pod is a running pod.
type Pod struct {
	SandboxID    string
	ContainerID  string
	PID          int    // the container's process, in the host's pid namespace
	SandboxPID   int    // the pause process
	CgroupParent string // "/kubepods/besteffort/pod<uid>"
	LogPath      string // the container's log, in the CRI's log format
}

// Pod runs a pod the way the kubelet does with its cgroupfs driver:
// RunPodSandbox (metadata, the kubelet's labels, host networking, cgroup
// parent /kubepods/besteffort/pod<uid>), then CreateContainer and
// StartContainer of BusyboxImage running p.Args. Cleanup stops and
// removes both and the pod's cgroups.
func (c *CRI) Pod(t *testing.T, p PodSpec) *Pod {
	t.Helper()
	ctx := context.Background()
	pod := &Pod{CgroupParent: "/kubepods/besteffort/pod" + p.UID}
	created := missingCgroupDirs(t, pod.CgroupParent)
	t.Cleanup(func() { removeCgroupDirs(t, created) }) // after the pod's removal, registered below
	logDir := filepath.Join(c.dir, "pods", p.Namespace+"_"+p.Name+"_"+p.UID)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	sandboxConfig, containerConfig := kubeletConfigs(p, pod.CgroupParent, logDir)
	sandbox, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig})
	if err != nil {
		t.Fatalf("RunPodSandbox %s/%s: %v; containerd's log:\n%s", p.Namespace, p.Name, err, c.logTail())
	}
	pod.SandboxID = sandbox.PodSandboxId
	t.Cleanup(func() { c.removePod(t, pod) })

	createdContainer, err := c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pod.SandboxID, Config: containerConfig, SandboxConfig: sandboxConfig,
	})
	if err != nil {
		t.Fatalf("CreateContainer %s in pod %s: %v; containerd's log:\n%s", p.Container, p.Name, err, c.logTail())
	}
	pod.ContainerID = createdContainer.ContainerId
	pod.LogPath = filepath.Join(logDir, p.Container, "0.log")
	if _, err := c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: pod.ContainerID}); err != nil {
		t.Fatalf("StartContainer %s: %v; containerd's log:\n%s", p.Container, err, c.logTail())
	}
	st, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: pod.ContainerID, Verbose: true})
	if err == nil {
		pod.PID, err = verbosePID(st.GetInfo())
	}
	if err != nil {
		t.Fatalf("finding container %s's pid with ContainerStatus: %v", p.Container, err)
	}
	sst, err := c.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: pod.SandboxID, Verbose: true})
	if err == nil {
		pod.SandboxPID, err = verbosePID(sst.GetInfo())
	}
	if err != nil {
		t.Fatalf("finding pod %s's sandbox pid with PodSandboxStatus: %v", p.Name, err)
	}
	return pod
}

// kubeletConfigs are the sandbox and container configs the kubelet sends
// for a best-effort, host-network pod of one container.
func kubeletConfigs(p PodSpec, cgroupParent, logDir string) (*runtimeapi.PodSandboxConfig, *runtimeapi.ContainerConfig) {
	hostNetwork := &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD,
	}
	podLabels := map[string]string{
		"io.kubernetes.pod.name":      p.Name,
		"io.kubernetes.pod.namespace": p.Namespace,
		"io.kubernetes.pod.uid":       p.UID,
	}
	sandbox := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: p.Name, Namespace: p.Namespace, Uid: p.UID},
		// No Hostname: like the kubelet for host-network pods, whose UTS
		// namespace is the node's (runc refuses to set a hostname there).
		LogDirectory: logDir,
		Labels:       podLabels,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent:    cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: hostNetwork},
		},
	}
	containerLabels := map[string]string{"io.kubernetes.container.name": p.Container}
	maps.Copy(containerLabels, podLabels)
	container := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: p.Container},
		Image:    &runtimeapi.ImageSpec{Image: BusyboxImage},
		Command:  p.Args,
		Labels:   containerLabels,
		LogPath:  p.Container + "/0.log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: hostNetwork},
		},
	}
	return sandbox, container
}

// verbosePID reads the pid from a verbose status's info, where
// containerd's CRI puts its own record ({"pid": N, ...}) under "info".
func verbosePID(info map[string]string) (int, error) {
	var record struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &record); err != nil {
		return 0, fmt.Errorf("decoding the verbose info: %w", err)
	}
	if record.PID <= 0 {
		return 0, errors.New("the verbose info has no pid")
	}
	return record.PID, nil
}

// removePod stops and removes the pod like the kubelet deleting it: the
// container first, then the sandbox.
func (c *CRI) removePod(t *testing.T, pod *Pod) {
	ctx := context.Background()
	var errs []string
	if pod.ContainerID != "" {
		if _, err := c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: pod.ContainerID, Timeout: 0}); err != nil {
			errs = append(errs, fmt.Sprintf("StopContainer: %v", err))
		}
		if _, err := c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: pod.ContainerID}); err != nil {
			errs = append(errs, fmt.Sprintf("RemoveContainer: %v", err))
		}
	}
	if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.SandboxID}); err != nil {
		errs = append(errs, fmt.Sprintf("StopPodSandbox: %v", err))
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.SandboxID}); err != nil {
		errs = append(errs, fmt.Sprintf("RemovePodSandbox: %v", err))
	}
	if len(errs) > 0 {
		t.Errorf("removing pod %s: %s", pod.SandboxID, strings.Join(errs, "; "))
	}
}
