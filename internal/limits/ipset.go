package limits

import (
	"net/netip"
	"slices"
)

// ipSet answers "is this address in one of these networks" with one map
// lookup per distinct prefix length in the set (a handful in practice),
// whatever the number of networks: a blocklist of 100k entries costs what a
// list of ten does.
type ipSet struct {
	v4, v6 []int // distinct prefix lengths, longest first
	nets   map[netip.Prefix]struct{}
}

func newIPSet(prefixes ...[]netip.Prefix) ipSet {
	s := ipSet{nets: make(map[netip.Prefix]struct{})}
	for _, list := range prefixes {
		for _, p := range list {
			if !p.IsValid() {
				continue
			}
			a := p.Addr()
			bits := p.Bits()
			if a.Is4In6() {
				a, bits = a.Unmap(), max(bits-96, 0)
			}
			p = netip.PrefixFrom(a.WithZone(""), bits).Masked()
			s.nets[p] = struct{}{}
			if p.Addr().Is4() {
				s.v4 = appendLen(s.v4, bits)
			} else {
				s.v6 = appendLen(s.v6, bits)
			}
		}
	}
	slices.Sort(s.v4)
	slices.Reverse(s.v4)
	slices.Sort(s.v6)
	slices.Reverse(s.v6)
	return s
}

func appendLen(lens []int, n int) []int {
	if slices.Contains(lens, n) {
		return lens
	}
	return append(lens, n)
}

func (s *ipSet) empty() bool { return len(s.nets) == 0 }

// contains reports whether a is in the set; a must already be unmapped.
func (s *ipSet) contains(a netip.Addr) bool {
	if len(s.nets) == 0 || !a.IsValid() {
		return false
	}
	lens := s.v6
	if a.Is4() {
		lens = s.v4
	}
	a = a.WithZone("")
	for _, bits := range lens {
		p, err := a.Prefix(bits)
		if err != nil {
			continue
		}
		if _, ok := s.nets[p]; ok {
			return true
		}
	}
	return false
}

// ipRules are one level's allow and deny lists: deny wins; a non-empty
// allow list admits only its networks.
type ipRules struct {
	allow, deny ipSet
}

// check returns "" when a passes, else the rejection reason.
func (r *ipRules) check(a netip.Addr) string {
	if r.deny.contains(a) {
		return reasonIPDenied
	}
	if !r.allow.empty() && !r.allow.contains(a) {
		return reasonIPNotAllowed
	}
	return ""
}
