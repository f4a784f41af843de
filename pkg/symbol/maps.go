package symbol

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mapping is one executable mapping of /proc/PID/maps.
type Mapping struct {
	Start, End uint64 // [Start, End) in the process
	Offset     uint64 // file offset mapped at Start
	File       FileID // the mapped file; zero for anonymous mappings
	// Path is the mapped file's path as the process sees it, without the
	// " (deleted)" the kernel appends for an unlinked file (Deleted says
	// so), or a pseudo-path such as "[vdso]". Empty for anonymous code.
	Path    string
	Deleted bool
}

// FileID names a file by device and inode. Dev is in the encoding of
// stat(2)'s st_dev (see Mkdev); a dev_t read in the kernel (s_dev) is
// converted with KernelDev.
type FileID struct {
	Dev, Inode uint64
}

// Mkdev encodes a device number as glibc's makedev and stat(2) do.
func Mkdev(major, minor uint32) uint64 {
	return uint64(major&0xfffff000)<<32 | uint64(major&0xfff)<<8 |
		uint64(minor&0xffffff00)<<12 | uint64(minor&0xff)
}

// KernelDev converts the kernel's internal dev_t (MAJOR<<20 | MINOR, as a
// BPF program reads it from a super_block) to stat(2)'s encoding.
func KernelDev(kdev uint32) uint64 {
	return Mkdev(kdev>>20, kdev&0xfffff)
}

// Module is the base name of the mapped file: what a frame prints.
func (m Mapping) Module() string {
	if i := strings.LastIndexByte(m.Path, '/'); i >= 0 {
		return m.Path[i+1:]
	}
	return m.Path
}

// ParseMaps reads /proc/PID/maps and returns its executable mappings in the
// file's order (ascending addresses). A malformed line is an error: the
// kernel writes this file, so anything else is not a maps file.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	var maps []Mapping
	sc := bufio.NewScanner(r)
	// A path is at most PATH_MAX bytes, escaped by the kernel only for '\n'.
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for n := 1; sc.Scan(); n++ {
		m, exec, err := parseMapsLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("reading maps line %d: %w", n, err)
		}
		if exec {
			maps = append(maps, m)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading maps: %w", err)
	}
	return maps, nil
}

// parseMapsLine parses "start-end perms offset major:minor inode   path".
// The path is everything after the inode and its padding, so it may hold
// spaces.
func parseMapsLine(line []byte) (m Mapping, exec bool, err error) {
	var fields [5][]byte
	rest := line
	for i := range fields {
		rest = bytes.TrimLeft(rest, " ")
		end := bytes.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		if end == 0 {
			return m, false, fmt.Errorf("%d fields, want at least 5", i)
		}
		fields[i], rest = rest[:end], rest[end:]
	}
	start, end, ok := bytes.Cut(fields[0], []byte{'-'})
	if !ok {
		return m, false, fmt.Errorf("range %q without '-'", fields[0])
	}
	if m.Start, err = parseHex(start); err != nil {
		return m, false, err
	}
	if m.End, err = parseHex(end); err != nil {
		return m, false, err
	}
	if m.End < m.Start {
		return m, false, fmt.Errorf("range %q ends before it starts", fields[0])
	}
	perms := fields[1]
	if len(perms) != 4 {
		return m, false, fmt.Errorf("permissions %q", perms)
	}
	if m.Offset, err = parseHex(fields[2]); err != nil {
		return m, false, err
	}
	major, minor, ok := bytes.Cut(fields[3], []byte{':'})
	if !ok {
		return m, false, fmt.Errorf("device %q without ':'", fields[3])
	}
	maj, err := parseHex(major)
	if err != nil || maj > 0xfff {
		return m, false, fmt.Errorf("device %q", fields[3])
	}
	minr, err := parseHex(minor)
	if err != nil || minr > 0xfffff {
		return m, false, fmt.Errorf("device %q", fields[3])
	}
	inode, err := strconv.ParseUint(string(fields[4]), 10, 64)
	if err != nil {
		return m, false, fmt.Errorf("inode %q", fields[4])
	}
	if inode != 0 {
		m.File = FileID{Dev: Mkdev(uint32(maj), uint32(minr)), Inode: inode}
	}
	m.Path = string(bytes.TrimLeft(rest, " "))
	if p, deleted := strings.CutSuffix(m.Path, " (deleted)"); deleted && inode != 0 {
		m.Path, m.Deleted = p, true
	}
	return m, perms[2] == 'x', nil
}

func parseHex(b []byte) (uint64, error) {
	v, err := strconv.ParseUint(string(b), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("hex number %q", b)
	}
	return v, nil
}
