package tracer

import (
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
func loadObjects(spec *ebpf.CollectionSpec, objs *twtraceObjects, cache *btf.Cache) error {
	if cache == nil {
		cache = btf.NewCache() // one decoded copy of the kernel's types for both groups
	}
	onlyMaps := spec.Copy()
	onlyMaps.Programs = nil
	coll, err := ebpf.NewCollectionWithOptions(onlyMaps, ebpf.CollectionOptions{})
	if err != nil {
		return err
	}
	defer coll.Close() // what was not assigned: .rodata, held by the programs
	opts := &ebpf.CollectionOptions{Cache: cache, MapReplacements: maps.Clone(coll.Maps)}
	if err := coll.Assign(&objs.twtraceMaps); err != nil { // takes them out of coll
		return err
	}

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
	}
	bigErr := make(chan error, 1)
	go func() { bigErr <- spec.Copy().LoadAndAssign(&big, opts) }()
	err = spec.Copy().LoadAndAssign(&rest, opts)
	if e := <-bigErr; e != nil {
		err = e // one cause is enough, and the same one on a second try
	}
	objs.TwState, objs.TwStateNest, objs.TwReset = big.TwState, rest.TwStateNest, rest.TwReset
	objs.TwResetNest, objs.TwEnterBind, objs.TwExitBind = rest.TwResetNest, rest.TwEnterBind, rest.TwExitBind
	objs.TwFork = rest.TwFork
	if err != nil {
		objs.Close() // closes what did load; nil fields are skipped
		return err
	}
	return nil
}
