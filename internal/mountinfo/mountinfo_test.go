package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		``: ``, `/sys/fs/cgroup`: `/sys/fs/cgroup`, `/a\040b`: "/a b", `\011\012\134`: "\t\n\\",
		`/end\04`: `/end\04`, `\400x`: `\400x`, `\\040`: `\ `, `/x\0401`: "/x 1", `\777`: `\777`, `\x41`: `\x41`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{`/a\040b`, `\\`, `\0`, `\777`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := Unescape(s); len(got) > len(s) {
			t.Fatalf("Unescape(%q) = %q: longer than its input", s, got)
		}
	})
}
