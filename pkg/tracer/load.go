package tracer

import (
	"errors"
	"maps"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// loadObjects does what spec.LoadAndAssign(objs) does, in less time: the
// kernel verifies tw_state and tw_state_nest in about 12 ms each, one
// after the other when loaded as one collection. Here the maps (the
// settings' .rodata among them) are created first, then the programs are
// loaded in two groups at once, both against those maps, so that the two
// verifications run on two CPUs.
//
// With precise set, the precise tier's programs are loaded at the same
// time, against the same maps; whether they could be is reported apart
// (pre, preErr), since the tracepoint tier runs without them.
//
// With stacks set, the net/http callers' uprobe programs (gohttp.h) are
// loaded too, after the rest: only where stacks are taken can they serve.
func loadObjects(spec *ebpf.CollectionSpec, objs *twtraceObjects, cache *btf.Cache, precise, stacks bool) (ld loaded, err error) {
	if cache == nil {
		cache = btf.NewCache() // one decoded copy of the kernel's types for all groups
	}
	// Only the precise tier's programs use tw_socks, and loadPrecise
	// makes their own from spec: the tracepoint tier's stays as small as
	// a map gets. Its buckets alone (16 bytes each, however empty) are
	// 4 MiB at the default size, for nothing where the tier cannot load.
	full := spec
	spec = spec.Copy()
	spec.Maps["tw_socks"].MaxEntries = 1
	onlyMaps := spec.Copy()
	onlyMaps.Programs = nil
	coll, err := ebpf.NewCollectionWithOptions(onlyMaps, ebpf.CollectionOptions{})
	if err != nil {
		return ld, err
	}
	defer coll.Close() // what was not assigned: .rodata, held by the programs
	opts := &ebpf.CollectionOptions{Cache: cache, MapReplacements: maps.Clone(coll.Maps)}
	if err := coll.Assign(&objs.twtraceMaps); err != nil { // takes them out of coll
		return ld, err
	}
	// .bss holds connect_exits and procs_since, which are set after
	// loading: keep it.
	ld.bss, ld.connectExits, ld.procsSince = coll.Maps[".bss"], coll.Variables["connect_exits"], coll.Variables["procs_since"]
	ld.goHTTPAttached = coll.Variables["go_http_attached"]
	delete(coll.Maps, ".bss")
	if ld.connectExits == nil || ld.procsSince == nil || ld.goHTTPAttached == nil {
		ld.bss.Close()
		return ld, errors.New("the BPF object has no connect_exits, procs_since or go_http_attached variable")
	}

	preDone := make(chan struct{})
	if precise {
		go func() {
			defer close(preDone)
			ld.pre, ld.preErr = loadPrecise(full, opts, cache)
		}()
	} else {
		close(preDone)
	}
	defer func() {
		<-preDone
		if err != nil {
			ld.close()
		}
	}()

	var big struct {
		TwState *ebpf.Program `ebpf:"tw_state"`
	}
	var rest struct {
		TwStateNest *ebpf.Program `ebpf:"tw_state_nest"`
		TwReset     *ebpf.Program `ebpf:"tw_reset"`
		TwResetNest *ebpf.Program `ebpf:"tw_reset_nest"`
		TwEnterBind *ebpf.Program `ebpf:"tw_enter_bind"`
		TwExitBind  *ebpf.Program `ebpf:"tw_exit_bind"`
		TwFork      *ebpf.Program `ebpf:"tw_fork"`
		TwExec      *ebpf.Program `ebpf:"tw_exec"`
	}
	var goHTTPProgs struct {
		TwHttpQueue *ebpf.Program `ebpf:"tw_http_queue"`
		TwHttpDial  *ebpf.Program `ebpf:"tw_http_dial"`
	}
	bigErr := make(chan error, 1)
	go func() { bigErr <- spec.Copy().LoadAndAssign(&big, opts) }()
	err = spec.Copy().LoadAndAssign(&rest, opts)
	if err == nil && stacks {
		err = spec.Copy().LoadAndAssign(&goHTTPProgs, opts)
	}
	if e := <-bigErr; e != nil {
		err = e // one cause is enough, and the same one on a second try
	}
	objs.TwState, objs.TwStateNest, objs.TwReset = big.TwState, rest.TwStateNest, rest.TwReset
	objs.TwResetNest, objs.TwEnterBind, objs.TwExitBind = rest.TwResetNest, rest.TwEnterBind, rest.TwExitBind
	objs.TwFork, objs.TwExec = rest.TwFork, rest.TwExec
	objs.TwHttpQueue, objs.TwHttpDial = goHTTPProgs.TwHttpQueue, goHTTPProgs.TwHttpDial
	if err != nil {
		objs.Close() // closes what did load; nil fields are skipped
		return ld, err
	}
	return ld, nil
}

// loaded is what loadObjects hands over besides the objects.
type loaded struct {
	bss          *ebpf.Map
	connectExits *ebpf.Variable
	procsSince   *ebpf.Variable
	// goHTTPAttached: set once the net/http uprobes are on an executable.
	goHTTPAttached *ebpf.Variable
	pre            *preciseObjs // nil when the precise tier could not load
	preErr         error        // why not
}

func (ld *loaded) close() {
	ld.pre.close()
	ld.pre = nil
	if ld.bss != nil {
		ld.bss.Close()
		ld.bss = nil
	}
}
