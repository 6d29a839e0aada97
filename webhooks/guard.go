package webhooks

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// denyPrivate is a net.Dialer Control that refuses to connect to loopback,
// private, link-local, shared (CGNAT), unspecified and multicast addresses.
// It runs on the address actually dialled, after DNS, so a name that
// resolves (or is rebound) to an internal address is refused too.
func denyPrivate(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("webhook address %q is not an IP address", host)
	}
	if PrivateAddr(ip) {
		return fmt.Errorf("webhook address %s is private or local; refused by --webhook-deny-private", ip)
	}
	return nil
}

var sharedSpace = netip.MustParsePrefix("100.64.0.0/10")

// PrivateAddr reports whether ip is one the SSRF guard refuses.
func PrivateAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || sharedSpace.Contains(ip)
}
