package inventory

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelHZ is the running kernel's CONFIG_HZ, read where BPF loaders look
// for the kernel's configuration; 0 when it is nowhere to be found.
func kernelHZ() uint32 {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		if f, err := os.Open("/boot/config-" + unix.ByteSliceToString(uts.Release[:])); err == nil {
			defer f.Close()
			if hz := parseKconfigHZ(f); hz != 0 {
				return hz
			}
		}
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return 0
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return 0
	}
	return parseKconfigHZ(z)
}

// parseKconfigHZ finds "CONFIG_HZ=250" in a kernel configuration.
func parseKconfigHZ(r io.Reader) uint32 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return 0
			}
			return uint32(hz)
		}
	}
	return 0
}
