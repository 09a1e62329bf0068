package ipc

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// appendRights appends one SCM_RIGHTS control message carrying fds to oob,
// without the allocation unix.UnixRights makes.
func appendRights(oob []byte, fds []int) []byte {
	if len(fds) == 0 {
		return oob
	}
	datalen := 4 * len(fds)
	space := unix.CmsgSpace(datalen)
	start := len(oob)
	oob = append(oob, make([]byte, space)...) // zeroed; the compiler does not allocate the make
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[start]))
	h.Level = unix.SOL_SOCKET
	h.Type = unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(datalen))
	data := oob[start+unix.CmsgLen(0):]
	for i, fd := range fds {
		*(*int32)(unsafe.Pointer(&data[4*i])) = int32(fd)
	}
	return oob
}

// parseRights appends the descriptors of every SCM_RIGHTS message in oob to
// fds. Unlike unix.ParseSocketControlMessage it does not allocate. A malformed
// control buffer gives ErrTruncated, with whatever was parsed before it
// appended so the caller can close it.
func parseRights(oob []byte, fds []int) ([]int, error) {
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < hdr || l > len(oob) {
			return fds, ErrTruncated
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_RIGHTS {
			data := oob[hdr:l]
			for i := 0; i+4 <= len(data); i += 4 {
				fds = append(fds, int(*(*int32)(unsafe.Pointer(&data[i]))))
			}
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(oob) {
			break
		}
		oob = oob[next:]
	}
	return fds, nil
}
