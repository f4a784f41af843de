package inventory

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Load and attach failures become the package's errors, in one line; a
// verifier refusal (EACCES with a log) is not mistaken for privileges.
func TestLoadError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"EPERM", fmt.Errorf("load program: %w", unix.EPERM), ErrPermission},
		{"no iter/tcp", fmt.Errorf("attach: %w", ebpf.ErrNotSupported), ErrKernelTooOld},
		{"helper missing", &ebpf.VerifierError{Cause: unix.EINVAL, Log: []string{"0: R1=ctx()", "unknown func bpf_seq_write#127", "processed 3 insns"}}, ErrKernelTooOld},
		{"verifier refusal", &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"R1 invalid mem access 'scalar'"}}, nil},
	} {
		got := loadError("loading", tc.err)
		for _, sentinel := range []error{ErrPermission, ErrKernelTooOld} {
			if errors.Is(got, sentinel) != (sentinel == tc.want) {
				t.Errorf("%s: %v; want it to match %v", tc.name, got, tc.want)
			}
		}
		if strings.Contains(got.Error(), "\n") {
			t.Errorf("%s: %q is not one line", tc.name, got)
		}
	}
}
