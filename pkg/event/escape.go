package event

// Escape makes a string chosen by someone else (a cgroup path, a pod's
// name) safe to print on a terminal, as EscapeComm does a comm: printable
// UTF-8 as is, every other byte \xNN, a backslash \\.
func Escape(s string) string {
	return string(appendEscaped(make([]byte, 0, len(s)), []byte(s)))
}

// AppendJSONString appends s as a JSON string: quoted, with every control
// character, DEL and invalid UTF-8 escaped.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	dst = appendJSONChars(dst, []byte(s))
	return append(dst, '"')
}
