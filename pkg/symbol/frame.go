package symbol

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Frame is one return address of a stack, symbolized as far as the binary
// allows. Strings are empty and numbers 0 where unknown; a frame that could
// not be symbolized still names its Module and Address.
type Frame struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
	// Module is the base name of the mapped file holding Address
	// (libc.so.6, the executable's name).
	Module string `json:"module"`
	// Address is the address in the process, as captured.
	Address uint64 `json:"address"`
	// FileAddress is Address in the module's own ELF address space (its
	// p_vaddr space): what addr2line -e <module> takes. 0 when unknown.
	FileAddress uint64 `json:"file_address"`
}

// String gives the frame's screen form: "function (file:line)", else
// "function (module+0xaddr)", else "module+0xaddr", else "0xaddr". Symbol
// and file names come from the binary, which the traced process controls,
// so every control or non-printable character is escaped: a hostile name
// never reaches a terminal raw.
func (f Frame) String() string {
	var where string
	switch {
	case f.File != "":
		where = fmt.Sprintf("%s:%d", f.File, f.Line)
	case f.Module != "" && f.FileAddress != 0:
		where = fmt.Sprintf("%s+%#x", f.Module, f.FileAddress)
	case f.Module != "":
		where = fmt.Sprintf("%s@%#x", f.Module, f.Address)
	default:
		where = fmt.Sprintf("%#x", f.Address)
	}
	if f.Function == "" {
		return Escape(where)
	}
	return Escape(f.Function + " (" + where + ")")
}

// Escape returns s with every byte sequence a terminal could act on
// written out: control characters, invalid UTF-8, format characters such
// as bidirectional overrides, and the backslash itself (so an escape in
// the output is never ambiguous). Printable text passes unchanged.
func Escape(s string) string {
	clean := true
	for _, r := range s {
		if r == '\\' || r == utf8.RuneError || !unicode.IsGraphic(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case !unicode.IsGraphic(r) || r == utf8.RuneError:
			if r < 0x80 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
