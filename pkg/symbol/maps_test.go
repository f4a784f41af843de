package symbol

import (
	"os"
	"strings"
	"testing"
)

const sampleMaps = `55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234567                    /usr/bin/my prog
55d0c0a02000-55d0c0a05000 r-xp 00002000 fd:01 1234567                    /usr/bin/my prog
7f1e2a000000-7f1e2a021000 rw-p 00000000 00:00 0 
7f1e2a228000-7f1e2a3bd000 r-xp 00028000 103:02 98765                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a400000-7f1e2a401000 r-xp 00001000 00:1f 42                         /tmp/go-build1/b001/x.test (deleted)
7f1e2a500000-7f1e2a510000 rwxp 00000000 00:00 0 
7ffd1b3f4000-7ffd1b3f6000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`

func TestParseMapsKeepsExecutableMappings(t *testing.T) {
	maps, err := ParseMaps(strings.NewReader(sampleMaps))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{Start: 0x55d0c0a02000, End: 0x55d0c0a05000, Offset: 0x2000,
			File: FileID{Dev: Mkdev(0xfd, 1), Inode: 1234567}, Path: "/usr/bin/my prog"},
		{Start: 0x7f1e2a228000, End: 0x7f1e2a3bd000, Offset: 0x28000,
			File: FileID{Dev: Mkdev(0x103, 2), Inode: 98765}, Path: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
		{Start: 0x7f1e2a400000, End: 0x7f1e2a401000, Offset: 0x1000,
			File: FileID{Dev: Mkdev(0, 0x1f), Inode: 42}, Path: "/tmp/go-build1/b001/x.test", Deleted: true},
		{Start: 0x7f1e2a500000, End: 0x7f1e2a510000},
		{Start: 0x7ffd1b3f4000, End: 0x7ffd1b3f6000, Path: "[vdso]"},
		{Start: 0xffffffffff600000, End: 0xffffffffff601000, Path: "[vsyscall]"},
	}
	if len(maps) != len(want) {
		t.Fatalf("%d mappings, want %d: %+v", len(maps), len(want), maps)
	}
	for i := range want {
		if maps[i] != want[i] {
			t.Errorf("mapping %d = %+v, want %+v", i, maps[i], want[i])
		}
	}
	if got := maps[0].Module(); got != "my prog" {
		t.Errorf("module %q, want %q", got, "my prog")
	}
	if got := maps[1].Module(); got != "libc.so.6" {
		t.Errorf("module %q, want %q", got, "libc.so.6")
	}
}

func TestParseMapsRefusesWhatIsNotMaps(t *testing.T) {
	for _, bad := range []string{
		"55d0c0a02000 r-xp 00002000 fd:01 1234567 /x\n",         // no range
		"55d0c0a05000-55d0c0a02000 r-xp 00002000 fd:01 1 /x\n",  // backwards
		"55d0c0a02000-55d0c0a05000 r-xp 00002000 fd01 1 /x\n",   // device
		"55d0c0a02000-55d0c0a05000 r-xp 00002000 fd:01 x1 /x\n", // inode
		"55d0c0a02000-55d0c0a05000 r-x 00002000 fd:01 1 /x\n",   // perms
		"55d0c0a02000-55d0c0a05000 r-xp\n",                      // short
	} {
		if maps, err := ParseMaps(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed as %+v, want an error", bad, maps)
		}
	}
}

// The kernel's dev_t (MAJOR<<20 | MINOR) and stat(2)'s encoding agree.
func TestKernelDev(t *testing.T) {
	for _, c := range []struct {
		kdev       uint32
		major, min uint32
	}{{0x0fd00001, 0xfd, 1}, {0x10300002, 0x103, 2}, {0x0000001f, 0, 0x1f}, {0x000fffff, 0, 0xfffff}} {
		if got, want := KernelDev(c.kdev), Mkdev(c.major, c.min); got != want {
			t.Errorf("KernelDev(%#x) = %#x, want %#x", c.kdev, got, want)
		}
	}
	if got := Mkdev(8, 1); got != 0x801 {
		t.Errorf("Mkdev(8, 1) = %#x, want 0x801", got)
	}
}

func FuzzMaps(f *testing.F) {
	f.Add(sampleMaps)
	if self, err := os.ReadFile("/proc/self/maps"); err == nil {
		f.Add(string(self))
	}
	f.Add("0-1 --xp 0 0:0 0 \n")
	f.Add("ffffffffffffffff-ffffffffffffffff r-xp ffffffffffffffff fff:fffff 18446744073709551615  (deleted)\n")
	f.Fuzz(func(t *testing.T, s string) {
		maps, err := ParseMaps(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.End < m.Start {
				t.Errorf("mapping %+v ends before it starts", m)
			}
			if m.File == (FileID{}) && m.Deleted {
				t.Errorf("anonymous mapping %+v marked deleted", m)
			}
		}
	})
}
