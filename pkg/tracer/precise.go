package tracer

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Tier is the set of kernel hooks twtrace uses.
type Tier uint8

const (
	// TierAuto is the precise tier where the kernel lets its programs
	// attach, the tracepoint tier elsewhere.
	TierAuto Tier = iota
	// TierTracepoint uses BTF-typed tracepoints only (sock:inet_sock_set_state,
	// tcp:tcp_receive_reset): every kernel twtrace supports.
	TierTracepoint
	// TierPrecise adds fentry/fexit programs on the functions that make,
	// reuse and end timewait sockets and on tcp_v4_connect/tcp_v6_connect:
	// overflow, timewait_end and timewait_reuse events, every failed
	// connect with its errno, and timewait entries confirmed where the
	// kernel makes the socket.
	TierPrecise
)

var tierNames = [...]string{TierAuto: "auto", TierTracepoint: "tracepoint", TierPrecise: "precise"}

func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return "unknown"
}

// ParseTier is the inverse of Tier.String.
func ParseTier(s string) (Tier, error) {
	for i, name := range tierNames {
		if s == name {
			return Tier(i), nil
		}
	}
	return 0, fmt.Errorf("unknown tier %q (valid: auto, tracepoint, precise)", s)
}

// ErrPreciseUnavailable is returned by New when the precise tier was
// required (TierPrecise) and the kernel does not let it attach.
var ErrPreciseUnavailable = errors.New("the precise tier (fentry/fexit) cannot attach on this kernel")

// TierInfo says which tier a Tracer runs, and why not the precise one.
type TierInfo struct {
	Tier Tier // TierTracepoint or TierPrecise, never TierAuto
	// Hooks are the kernel functions the precise tier's programs are
	// attached to (empty in the tracepoint tier).
	Hooks []string
	// Fallback says why the precise tier is not active: "" when it is,
	// or when the tracepoint tier was asked for.
	Fallback string
	// Partial lists precise hooks that could not attach while the tier
	// still runs without them (tcp_v6_connect where IPv6 is a module).
	Partial []string
}

// hook is one precise-tier program and the kernel function it attaches
// to. The function is looked up in the kernel's BTF by name (the first of
// names that exists) and its prototype checked against what the program
// reads, so a renamed or re-typed function is found or refused by what
// the kernel says, never by its version number.
type hook struct {
	prog  string
	names []string
	// params are the struct names the first parameters point to ("" for
	// any type); ret the struct the result points to, "int", or "" for
	// any.
	params []string
	ret    string
	// optional hooks may be missing: the tier runs without them.
	optional bool
}

var preciseHooks = []hook{
	{prog: "tw_alloc", names: []string{"inet_twsk_alloc"}, params: []string{"sock", "", "int"}, ret: "inet_timewait_sock"},
	{prog: "tw_expire", names: []string{"tw_timer_handler"}, params: []string{"timer_list"}},
	{prog: "tw_kill", names: []string{"inet_twsk_deschedule_put"}, params: []string{"inet_timewait_sock"}},
	{prog: "tw_segment", names: []string{"tcp_timewait_state_process"}, params: []string{"inet_timewait_sock", "sk_buff", "tcphdr"}},
	{prog: "tw_reuse", names: []string{"tcp_twsk_unique"}, params: []string{"sock", "sock", ""}, ret: "int"},
	{prog: "tw_connect4", names: []string{"tcp_v4_connect"}, params: []string{"sock", "sockaddr", "int"}, ret: "int"},
	// Built in on the distributions' kernels; a module elsewhere, whose
	// functions fentry reaches only from 5.11 on.
	{prog: "tw_connect6", names: []string{"tcp_v6_connect"}, params: []string{"sock", "sockaddr", "int"}, ret: "int", optional: true},
}

// resolve finds h's function in the kernel's types and checks its
// prototype. It returns the function's name.
func (h *hook) resolve(kernel *btf.Spec) (string, error) {
	var fn *btf.Func
	for _, name := range h.names {
		if err := kernel.TypeByName(name, &fn); err == nil {
			break
		}
	}
	if fn == nil {
		return "", fmt.Errorf("%s: no such function in the kernel's BTF", strings.Join(h.names, " or "))
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return "", fmt.Errorf("%s: not a function prototype in the kernel's BTF", fn.Name)
	}
	if len(proto.Params) < len(h.params) {
		return "", fmt.Errorf("%s: takes %d parameters, twtrace reads %d", fn.Name, len(proto.Params), len(h.params))
	}
	for i, want := range h.params {
		if want != "" && typeName(proto.Params[i].Type) != want {
			return "", fmt.Errorf("%s: parameter %d is %s, twtrace expects %s", fn.Name, i+1, typeName(proto.Params[i].Type), want)
		}
	}
	if h.ret != "" && typeName(proto.Return) != h.ret {
		return "", fmt.Errorf("%s: returns %s, twtrace expects %s", fn.Name, typeName(proto.Return), h.ret)
	}
	return fn.Name, nil
}

// typeName names what t is or points to, past typedefs and qualifiers:
// "sock" for const struct sock *, "int" for int.
func typeName(t btf.Type) string {
	for range 8 {
		switch v := t.(type) {
		case *btf.Pointer:
			t = v.Target
		case *btf.Typedef:
			t = v.Type
		case *btf.Const:
			t = v.Type
		case *btf.Volatile:
			t = v.Type
		case *btf.Struct:
			return v.Name
		case *btf.Int:
			return v.Name
		case nil:
			return "void"
		default:
			return t.TypeName()
		}
	}
	return "?"
}

// preciseObjs are the precise tier's programs once loaded.
type preciseObjs struct {
	progs   map[string]*ebpf.Program // by program name
	targets map[string]string        // program name -> kernel function
	partial []string                 // optional hooks that could not load
	twSocks *ebpf.Map                // its table of live timewait sockets
}

func (p *preciseObjs) close() {
	if p == nil {
		return
	}
	for _, prog := range p.progs {
		prog.Close()
	}
	if p.twSocks != nil {
		p.twSocks.Close()
	}
}

// loadPrecise loads the precise tier's programs against the maps in opts.
// An error says why the tier cannot run here.
func loadPrecise(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, cache *btf.Cache) (*preciseObjs, error) {
	kernel, err := cache.Kernel()
	if err != nil {
		return nil, fmt.Errorf("reading the kernel's BTF: %w", err)
	}
	p := &preciseObjs{progs: map[string]*ebpf.Program{}, targets: map[string]string{}}
	// The table of live timewait sockets, at its full size, made here
	// rather than with the maps both tiers share: where the tier cannot
	// load, it is never made.
	p.twSocks, err = ebpf.NewMap(spec.Maps["tw_socks"])
	if err != nil {
		return nil, fmt.Errorf("creating the table of timewait sockets: %w", err)
	}
	own := *opts
	own.MapReplacements = maps.Clone(opts.MapReplacements)
	own.MapReplacements["tw_socks"] = p.twSocks
	opts = &own
	for i := range preciseHooks {
		h := &preciseHooks[i]
		name, err := h.resolve(kernel)
		if err == nil {
			var prog *ebpf.Program
			prog, err = loadOne(spec, h.prog, name, opts)
			if err == nil {
				p.progs[h.prog], p.targets[h.prog] = prog, name
				continue
			}
		}
		if h.optional {
			p.partial = append(p.partial, fmt.Sprintf("%s (%v)", h.names[0], err))
			continue
		}
		p.close()
		return nil, explainTracing(err)
	}
	return p, nil
}

// loadOne loads one program of spec, attached to fn.
func loadOne(spec *ebpf.CollectionSpec, prog, fn string, opts *ebpf.CollectionOptions) (*ebpf.Program, error) {
	s := spec.Copy()
	ps := s.Programs[prog]
	if ps == nil {
		return nil, fmt.Errorf("program %s is not in the BPF object", prog)
	}
	ps.AttachTo = fn
	var out struct {
		P *ebpf.Program `ebpf:"p"`
	}
	s.Programs = map[string]*ebpf.ProgramSpec{"p": ps}
	if err := s.LoadAndAssign(&out, opts); err != nil {
		// The library's wording is about its own internals (struct
		// fields, a MEMLOCK hint that does not apply): keep the cause.
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("the verifier refused %s on %s: %v", prog, fn, verr)
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return nil, fmt.Errorf("loading %s on %s: %w", prog, fn, errno)
		}
		return nil, fmt.Errorf("loading %s on %s: %w", prog, fn, err)
	}
	return out.P, nil
}

// errENOTSUPP is the kernel's internal "not supported" (524), which BPF
// syscalls return as is.
const errENOTSUPP = syscall.Errno(524)

// explainTracing turns the kernel's refusal of fentry/fexit into a
// sentence: this is the common case on kernels built without
// CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, or locked down.
func explainTracing(err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.As(err, &verr):
		return err
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("the kernel refuses fentry/fexit programs (%w)", err)
	case errors.Is(err, errENOTSUPP), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("the kernel does not support fentry/fexit programs (%w)", err)
	}
	return err
}

// attachPrecise attaches every loaded precise program; on failure it
// detaches what it attached.
func (t *Tracer) attachPrecise(p *preciseObjs) error {
	var links []link.Link
	for i := range preciseHooks {
		h := &preciseHooks[i]
		prog := p.progs[h.prog]
		if prog == nil {
			continue // an optional hook that did not load
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			for _, l := range links {
				l.Close()
			}
			return explainTracing(fmt.Errorf("attaching %s to %s: %w", h.prog, p.targets[h.prog], err))
		}
		links = append(links, l)
	}
	t.links = append(t.links, links...)
	return nil
}

// startPrecise attaches the precise tier if it loaded, and records which
// tier runs. Only TierPrecise makes its absence an error.
func (t *Tracer) startPrecise(want Tier, pre *preciseObjs, preErr error) error {
	t.tier = TierInfo{Tier: TierTracepoint}
	if want == TierTracepoint {
		return nil
	}
	if pre != nil {
		if err := t.attachPrecise(pre); err != nil {
			pre.close()
			pre, preErr = nil, err
		}
	}
	if pre == nil {
		t.tier.Fallback = preErr.Error()
		if want == TierPrecise {
			return fmt.Errorf("%w: %v", ErrPreciseUnavailable, preErr)
		}
		return nil
	}
	t.precise = pre
	t.tier = TierInfo{Tier: TierPrecise, Partial: pre.partial}
	for i := range preciseHooks {
		if fn := pre.targets[preciseHooks[i].prog]; fn != "" {
			t.tier.Hooks = append(t.tier.Hooks, fn)
		}
	}
	// From now on the connect() exits report every failed connect; the
	// tracepoint's own EADDRNOTAVAIL would be the same one twice. (In the
	// moment between attaching and this, a failure can show twice.)
	var exits twtraceConnectExit
	if pre.progs["tw_connect4"] != nil {
		exits |= twtraceConnectExitCONNECT_EXIT4
	}
	if pre.progs["tw_connect6"] != nil {
		exits |= twtraceConnectExitCONNECT_EXIT6
	}
	if exits != 0 {
		if err := t.connectExits.Set(uint32(exits)); err != nil {
			return fmt.Errorf("switching connect errors to the precise tier: %w", err)
		}
	}
	return nil
}

// Tier says which tier runs, and why not the precise one.
func (t *Tracer) Tier() TierInfo { return t.tier }

// UntrackedTimewait is how many timewait sockets the precise tier's table
// had no room for (MaxTimewait): their end is not reported.
func (t *Tracer) UntrackedTimewait() (uint64, error) {
	return t.lostCount(twtraceLostSlotLOST_TW)
}
