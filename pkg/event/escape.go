package event

// Escape makes a string chosen by someone else (a cgroup path, a pod's
// name) safe to print on a terminal, as EscapeComm does a comm: printable
// UTF-8 as is, every other byte \xNN, a backslash \\.
func Escape(s string) string {
	return string(appendEscaped(make([]byte, 0, len(s)), []byte(s)))
}
