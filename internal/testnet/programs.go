package testnet

import "github.com/cilium/ebpf"

// CountPrograms counts the BPF programs loaded host-wide whose name is in
// names: what a test checks to prove a tracer left nothing behind.
func CountPrograms(names map[string]bool) int {
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		if info, err := p.Info(); err == nil && names[info.Name] {
			n++
		}
		p.Close()
	}
}
