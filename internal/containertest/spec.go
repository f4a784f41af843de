package containertest

// The part of the OCI runtime spec (config.json) the fixtures write; field
// names follow the spec, version 1.0.2.

type spec struct {
	OCIVersion string    `json:"ociVersion"`
	Process    process   `json:"process"`
	Root       specRoot  `json:"root"`
	Hostname   string    `json:"hostname"`
	Mounts     []mount   `json:"mounts"`
	Linux      linuxSpec `json:"linux"`
}

type process struct {
	Terminal        bool         `json:"terminal"`
	User            user         `json:"user"`
	Args            []string     `json:"args"`
	Env             []string     `json:"env"`
	Cwd             string       `json:"cwd"`
	Capabilities    capabilities `json:"capabilities"`
	NoNewPrivileges bool         `json:"noNewPrivileges"`
}

type user struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

type capabilities struct {
	Bounding  []string `json:"bounding"`
	Effective []string `json:"effective"`
	Permitted []string `json:"permitted"`
	Ambient   []string `json:"ambient"`
}

type specRoot struct {
	Path     string `json:"path"`
	Readonly bool   `json:"readonly"`
}

type mount struct {
	Destination string   `json:"destination"`
	Type        string   `json:"type"`
	Source      string   `json:"source"`
	Options     []string `json:"options,omitempty"`
}

type linuxSpec struct {
	CgroupsPath   string      `json:"cgroupsPath,omitempty"`
	Namespaces    []namespace `json:"namespaces"`
	MaskedPaths   []string    `json:"maskedPaths"`
	ReadonlyPaths []string    `json:"readonlyPaths"`
}

type namespace struct {
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
}

// newSpec is runc's default spec (`runc spec`) with no rlimits, the root
// file system writable only in /tmp, and the network namespace chosen by o.
func newSpec(args []string, o BundleOptions) spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	ns := []namespace{{Type: "pid"}, {Type: "ipc"}, {Type: "uts"}, {Type: "mount"}}
	if o.NetnsPath != "" {
		ns = append(ns, namespace{Type: "network", Path: o.NetnsPath})
	}
	return spec{
		OCIVersion: "1.0.2",
		Process: process{
			Args:            args,
			Env:             append([]string{"PATH=/bin"}, o.Env...),
			Cwd:             "/",
			Capabilities:    capabilities{Bounding: caps, Effective: caps, Permitted: caps, Ambient: caps},
			NoNewPrivileges: true,
		},
		Root:     specRoot{Path: "rootfs", Readonly: true},
		Hostname: "containertest",
		Mounts: []mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: linuxSpec{
			CgroupsPath: o.CgroupsPath,
			Namespaces:  ns,
			MaskedPaths: []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}
