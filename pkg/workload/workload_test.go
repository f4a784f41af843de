package workload

import "testing"

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

// Each --by folds what it says, and falls back to the program where the
// process has no container, pod or unit.
func TestGroupOf(t *testing.T) {
	curl := Process{PID: 1001, PPID: 4242, ExeDev: 8<<20 | 1, ExeIno: 77, Comm: comm("curl")}
	none := Identity{}
	box := Identity{ContainerID: "ab12", PodUID: "u-1", Unit: ""}
	cron := Identity{Unit: "cron.service"}
	program := Group{Comm: comm("curl"), ExeDev: 8<<20 | 1, ExeIno: 77, PPID: 4242}
	inBox := Group{Comm: comm("curl"), ExeDev: 8<<20 | 1, ExeIno: 77, Owner: "container:ab12"}
	for _, tc := range []struct {
		by   By
		id   *Identity
		want Group
	}{
		{ByPID, &box, Group{PID: 1001, Comm: comm("curl")}},
		{ByProgram, &none, program},
		{ByProgram, &box, inBox}, // in a container: whatever its parent
		{ByContainer, &box, Group{Owner: "container:ab12"}},
		{ByContainer, &none, program},
		{ByPod, &box, Group{Owner: "pod:u-1"}},
		{ByPod, &cron, program},
		{ByUnit, &cron, Group{Owner: "unit:cron.service"}},
		{ByUnit, &box, inBox},
	} {
		if got := GroupOf(tc.by, &curl, tc.id); got != tc.want {
			t.Errorf("%s %+v: %+v, want %+v", tc.by, *tc.id, got, tc.want)
		}
	}
	// Two programs under one parent stay apart; one program's processes
	// under one parent fold.
	sh := curl
	sh.PID, sh.Comm, sh.ExeIno = 1002, comm("sh"), 78
	next := curl
	next.PID = 1003
	if GroupOf(ByProgram, &sh, &none) == GroupOf(ByProgram, &curl, &none) {
		t.Error("curl and sh under one parent folded together")
	}
	if GroupOf(ByProgram, &next, &none) != GroupOf(ByProgram, &curl, &none) {
		t.Error("two curls under one parent not folded")
	}
}

func TestParseBy(t *testing.T) {
	for _, b := range []By{ByProgram, ByPID, ByContainer, ByPod, ByUnit} {
		if got, err := ParseBy(b.String()); err != nil || got != b {
			t.Errorf("ParseBy(%q) = %v, %v", b, got, err)
		}
	}
	if _, err := ParseBy("host"); err == nil || err.Error() != `--by "host": want one of program, pid, container, pod, unit` {
		t.Errorf("ParseBy(host): %v", err)
	}
}

func TestName(t *testing.T) {
	named := Identity{ContainerID: "3f2a1b9c0d1e2f3a", ContainerRuntime: "containerd", PodUID: "u-1",
		Pod: "checkout-7d9f", PodNamespace: "payments", Container: "api"}
	bare := Identity{ContainerID: "3f2a1b9c0d1e2f3a", PodUID: "u-1"}
	for _, tc := range []struct {
		g    Group
		id   Identity
		want string
	}{
		{Group{Comm: comm("curl"), PPID: 1}, named, "curl"},
		{Group{Owner: "container:x"}, named, "payments/checkout-7d9f/api"},
		{Group{Owner: "container:x"}, bare, "3f2a1b9c0d1e"},
		{Group{Owner: "container:x"}, Identity{ContainerID: "abc", ContainerRuntime: "docker"}, "docker abc"},
		{Group{Owner: "pod:u-1"}, named, "payments/checkout-7d9f"},
		{Group{Owner: "pod:u-1"}, bare, "pod u-1"},
		{Group{Owner: "unit:cron.service"}, Identity{Unit: "cron.service"}, "cron.service"},
	} {
		if got := Name(&tc.g, "curl", &tc.id); got != tc.want {
			t.Errorf("Name(%+v, %+v) = %q, want %q", tc.g, tc.id, got, tc.want)
		}
	}
}

func TestSelector(t *testing.T) {
	api := Identity{ContainerID: "3f2a1b9c0d1e", Pod: "checkout", PodNamespace: "payments", Container: "api"}
	for _, tc := range []struct {
		s    Selector
		want bool
	}{
		{Selector{}, true},
		{Selector{Pods: []string{"cart", "checkout"}}, true},
		{Selector{Pods: []string{"cart"}}, false},
		{Selector{PodNamespaces: []string{"payments"}, Containers: []string{"api"}}, true},
		{Selector{PodNamespaces: []string{"payments"}, Containers: []string{"db"}}, false},
		{Selector{Containers: []string{"3f2a"}}, true},  // an id prefix
		{Selector{Containers: []string{"3f2"}}, false},  // too short to be one
		{Selector{Containers: []string{"3f2b"}}, false}, // another id
	} {
		if got := tc.s.Match(&api); got != tc.want {
			t.Errorf("%+v.Match = %v, want %v", tc.s, got, tc.want)
		}
	}
	if (&Selector{Pods: []string{"checkout"}}).Match(&Identity{}) {
		t.Error("a pod selector kept a process in no pod")
	}
}
