package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/twtrace/twtrace/pkg/doctor"
	"github.com/twtrace/twtrace/pkg/report"
)

type doctorFlags struct {
	output      string
	netns       string
	pid         string
	criEndpoint string
}

func newDoctorCommand() *cobra.Command {
	var f doctorFlags
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that twtrace can run here, and explain a namespace's port-exhaustion settings",
		Long: `twtrace doctor answers at once, without waiting for traffic:

  - can twtrace run here: privileges, kernel BTF, BPF ring buffer, tracefs,
    and which hooks really attach (it loads and attaches twtrace's tracer
    and socket iterator, and minimal fentry and kprobe programs, then
    unloads them all);
  - the namespace's exhaustion sysctls, each with what it means here, the
    new connections per second one destination sustains, the timewait
    sockets held now, the destinations with the least headroom, the TcpExt
    timewait counters, and warnings on dangerous settings.

The namespace is doctor's own, or --netns INODE, or --pid PID's.
Exit status 0 when twtrace can run here, 1 when it cannot (one line on
stderr says why), 2 for bad flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDoctor(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "text", "output format: text or json")
	fl.StringVar(&f.netns, "netns", "", "explain this network namespace (inode, as in stat -L -c %i /proc/PID/ns/net) instead of doctor's own")
	fl.StringVar(&f.pid, "pid", "", "explain the network namespace of this process")
	fl.StringVar(&f.criEndpoint, "cri-endpoint", "", criEndpointUsage)
	return cmd
}

func runDoctor(cmd *cobra.Command, f *doctorFlags) error {
	if f.output != "text" && f.output != "json" {
		return usageError{fmt.Errorf("invalid --output %q: want text or json", f.output)}
	}
	if f.netns != "" && f.pid != "" {
		return usageError{errors.New("--netns and --pid both name a namespace: give one")}
	}
	var (
		inode uint64
		pid   int
		err   error
	)
	if f.netns != "" {
		if inode, err = strconv.ParseUint(f.netns, 10, 32); err != nil || inode == 0 {
			return usageError{fmt.Errorf("invalid --netns %q: not a network namespace inode number", f.netns)}
		}
	}
	if f.pid != "" {
		if pid, err = strconv.Atoi(f.pid); err != nil || pid <= 0 {
			return usageError{fmt.Errorf("invalid --pid %q: not a process id", f.pid)}
		}
	}
	// Capabilities are the calling thread's: this one, which Gather runs on too.
	ref, err := doctor.Target(uint32(inode), pid, doctor.ReadCaps())
	if errors.Is(err, doctor.ErrNoNamespace) {
		return usageError{err}
	}
	if err != nil {
		return err
	}

	rep := doctor.Diagnose(doctor.Gather(ref))
	nss := []report.Namespace{{PID: rep.Namespace.PID}}
	if err := nameOwners(nss, f.criEndpoint, cmd.ErrOrStderr()); err != nil {
		return err
	}
	rep.Namespace.Owner = nss[0].Owner
	out := cmd.OutOrStdout()
	if f.output == "json" {
		err = json.NewEncoder(out).Encode(&rep)
	} else {
		err = doctor.WriteText(out, &rep)
	}
	if err != nil && !errors.Is(err, syscall.EPIPE) {
		return err
	}
	if !rep.CanRun {
		return errors.New("cannot run here: " + rep.Reason)
	}
	return nil
}
