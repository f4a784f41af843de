package symbol

import (
	"encoding/json"
	"testing"
)

func TestFrameScreenForm(t *testing.T) {
	for _, c := range []struct {
		frame Frame
		want  string
	}{
		{Frame{Function: "main.openPerRequest", File: "/src/app/main.go", Line: 42, Module: "app", Address: 0x4a1b2c, FileAddress: 0x4a1b2c},
			"main.openPerRequest (/src/app/main.go:42)"},
		{Frame{Function: "open_per_request", Module: "copen", Address: 0x5629213738ae, FileAddress: 0x18ae},
			"open_per_request (copen+0x18ae)"},
		{Frame{Module: "libc.so.6", Address: 0x7f1e2a3bd0c4, FileAddress: 0x1150c4}, "libc.so.6+0x1150c4"},
		{Frame{Module: "[vdso]", Address: 0x7ffd1b3f4a10}, "[vdso]@0x7ffd1b3f4a10"},
		{Frame{Address: 0x7f00deadbeef}, "0x7f00deadbeef"},
		// A hostile binary's names: an escape sequence that would clear
		// the screen, a bidirectional override, a newline, invalid UTF-8.
		{Frame{Function: "evil\x1b[2J\u202e", File: "a\nb.c", Line: 1}, `evil\x1b[2J\u202e (a\x0ab.c:1)`},
		{Frame{Function: "bad\xff\\x41", Module: "m", FileAddress: 0x10}, `bad\xff\\x41 (m+0x10)`},
		{Frame{Function: "ns::Client<int>::open() const", File: "naïve.cc", Line: 7}, "ns::Client<int>::open() const (naïve.cc:7)"},
	} {
		if got := c.frame.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.frame, got, c.want)
		}
	}
}

// The JSON form of a frame, plus file_address.
func TestFrameJSON(t *testing.T) {
	b, err := json.Marshal(Frame{Function: "main.f", File: "m.go", Line: 3, Module: "app", Address: 0x401003, FileAddress: 0x401003})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"function":"main.f","file":"m.go","line":3,"module":"app","address":4198403,"file_address":4198403}`
	if string(b) != want {
		t.Errorf("%s, want %s", b, want)
	}
	b, _ = json.Marshal(Frame{})
	if want := `{"function":"","file":"","line":0,"module":"","address":0,"file_address":0}`; string(b) != want {
		t.Errorf("%s, want %s", b, want)
	}
}
