package headroom

// portSet is one bit per TCP port, 8 KiB. It lives on the stack of Compute
// and never allocates.
type portSet [1 << 16 / 64]uint64

func (s *portSet) add(p uint16)      { s[p>>6] |= 1 << (p & 63) }
func (s *portSet) remove(p uint16)   { s[p>>6] &^= 1 << (p & 63) }
func (s *portSet) has(p uint16) bool { return s[p>>6]&(1<<(p&63)) != 0 }

// addSpan adds the ports lo..hi, both inclusive; nothing when lo > hi.
func (s *portSet) addSpan(lo, hi uint16) {
	if lo > hi {
		return
	}
	for w := lo >> 6; w <= hi>>6; w++ {
		s[w] |= spanMask(w, lo, hi)
	}
}

// spanMask is the bits of word w that stand for ports in lo..hi (lo <= hi).
func spanMask(w, lo, hi uint16) uint64 {
	m := ^uint64(0)
	if w == lo>>6 {
		m &= ^uint64(0) << (lo & 63)
	}
	if w == hi>>6 {
		m &= ^uint64(0) >> (63 - hi&63)
	}
	return m
}
