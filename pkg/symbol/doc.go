// Package symbol turns the user stack captured at connect() — return
// addresses in a process — into frames that name a function and, where the
// binary says so, its file and line.
//
// The work is split in the order the data arrives: ParseMaps reads which
// files a process has mapped where; a Binary holds what one ELF file can
// tell (its loadable segments, Go's pclntab, its symbol tables, DWARF
// lines); a Resolver takes a Snapshot of a live process — opening each
// mapped file while the process still holds it, so deleted binaries stay
// readable — and later turns addresses into Frames. CallSite then picks,
// from those frames, the line of application code that asked for the
// connection.
package symbol
