package tracer

import (
	"strconv"
	"unsafe"
)

// unsafePtr returns a pointer to a NUL-terminated copy of s for prctl.
func unsafePtr(s string) unsafe.Pointer {
	b := append([]byte(s), 0)
	return unsafe.Pointer(&b[0])
}

func strconvItoa(i int) string { return strconv.Itoa(i) }
