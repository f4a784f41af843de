package load

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A load run can be isolated in a network namespace of its own, so that the
// TIME_WAIT sockets it leaves die with the namespace instead of piling up on
// the host. Goroutines move between threads, and a namespace belongs to a
// thread: the whole process must be in the namespace, so the program
// re-executes itself in a new one (NetnsCommand), and the child sets it up
// (SetupNetns) before doing anything else.

// NetnsEnv marks a process started by NetnsCommand. Its value is the inode
// of the parent's network namespace, which the child must not be in.
const NetnsEnv = "TWLOAD_NETNS_PARENT"

// NetnsCommand returns a command that runs path with args in a new network
// namespace, with stdin, stdout and stderr those of this process. The
// program must call SetupNetns when InNetnsChild reports true. Starting
// the command needs CAP_SYS_ADMIN.
func NetnsCommand(path string, args ...string) (*exec.Cmd, error) {
	ino, err := netnsInode()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), NetnsEnv+"="+strconv.FormatUint(ino, 10))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNET,
		// The child is no use without its parent, which relays signals
		// and the exit status. SIGTERM still lets it print its report.
		Pdeathsig: unix.SIGTERM,
	}
	return cmd, nil
}

// InNetnsChild reports whether this process was started by NetnsCommand.
func InNetnsChild() bool {
	_, ok := os.LookupEnv(NetnsEnv)
	return ok
}

// SetupNetns prepares the namespace of a process started by NetnsCommand:
// it checks that the namespace is not its parent's (so that a stray
// environment variable cannot make it write the host's sysctls), brings
// loopback up and applies sysctls, in that order.
func SetupNetns(sysctls []Sysctl) error {
	parent, err := strconv.ParseUint(os.Getenv(NetnsEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("invalid %s: %q", NetnsEnv, os.Getenv(NetnsEnv))
	}
	own, err := netnsInode()
	if err != nil {
		return err
	}
	if own == parent {
		return errors.New("not in a new network namespace")
	}
	if err := LoopbackUp(); err != nil {
		return err
	}
	for _, s := range sysctls {
		if err := s.Apply(); err != nil {
			return err
		}
	}
	return nil
}

// netnsInode identifies the network namespace of this process.
func netnsInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("reading the network namespace: %w", err)
	}
	return st.Ino, nil
}

// LoopbackUp brings lo up in the current thread's network namespace; a new
// namespace has it down.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("reading the flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bringing lo up: %w", err)
	}
	return nil
}

// Sysctl is a net.* kernel setting of a network namespace.
type Sysctl struct {
	Key   string // dotted, as sysctl(8) writes it: net.ipv4.tcp_tw_reuse
	Value string
}

// sysctlKey accepts net.* keys whose components are plain names.
var sysctlKey = regexp.MustCompile(`^net(\.[A-Za-z0-9_-]+)+$`)

// ParseSysctl parses key=value. Only net.* keys are accepted: most of them
// belong to the network namespace, while other keys would change the host.
func ParseSysctl(s string) (Sysctl, error) {
	key, value, ok := strings.Cut(s, "=")
	key = strings.TrimSpace(key)
	if !ok {
		return Sysctl{}, fmt.Errorf("invalid sysctl %q: want key=value", s)
	}
	if !sysctlKey.MatchString(key) {
		return Sysctl{}, fmt.Errorf("invalid sysctl key %q: want net.* (e.g. net.ipv4.tcp_tw_reuse)", key)
	}
	return Sysctl{Key: key, Value: strings.TrimSpace(value)}, nil
}

// Path is the sysctl's file under /proc/sys.
func (s Sysctl) Path() string {
	return "/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")
}

// Apply writes the sysctl in the current network namespace.
func (s Sysctl) Apply() error {
	f, err := os.OpenFile(s.Path(), os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sysctl %s: no such setting in a network namespace", s.Key)
		}
		return fmt.Errorf("sysctl %s: %w", s.Key, err)
	}
	_, err = f.WriteString(s.Value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is the key's
		}
		return fmt.Errorf("sysctl %s=%q: %w", s.Key, s.Value, err)
	}
	return nil
}
