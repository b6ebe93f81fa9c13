//go:build unix

package sse

import (
	"net"
	"syscall"
)

// peerClosed reports whether the client has closed its side of conn (or
// the connection failed), without reading anything from it: a stream whose
// connection was taken over from net/http has no reader that would notice.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0 // end of stream: the client closed
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		default:
			closed = true
		}
		return true // never wait for readiness
	})
	return closed
}
