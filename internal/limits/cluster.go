package limits

import (
	"context"
	"time"
)

// decideSlots is decideRedis on a Redis Cluster, where the route's keys
// may live in several slots and no one script can see them all. The rules
// are grouped by slot, in the order of their first rule; each group is one
// atomic script call, and when a group refuses, the groups before it are
// refunded, so the decision stays all or nothing as on one Redis: only
// allowed requests are charged. Between a charge and its refund a
// concurrent request may see the bucket one token short; that is the price
// of rules that count by different things on different nodes.
func (e *Engine) decideSlots(ctx context.Context, s *snapshot, p *plan, keys []string, args []any, vs []verdict) (decision, bool, error) {
	groups := slotGroups(keys)
	var clock []any
	// args end with n = 1 and nothing to give back, then the test clock.
	if len(args) > 2*len(keys)+2 {
		clock = args[2*len(keys)+2:]
	}
	base := len(vs)
	vs = append(vs, make([]verdict, len(keys))...)
	var gk []string
	var ga []any
	for g, idx := range groups {
		gk, ga = gk[:0], ga[:0]
		for _, i := range idx {
			gk = append(gk, keys[i])
			ga = append(ga, args[2*i], args[2*i+1])
		}
		ga = append(ga, 1, 0)
		ga = append(ga, clock...)
		res, err := limitScript.Run(ctx, e.be.client, gk, ga...).Result()
		var out []int64
		if err == nil {
			out, err = limitAnswer(res, len(idx))
		}
		if err != nil {
			e.refund(ctx, s, groups[:g], keys, args, clock)
			return decision{}, true, err
		}
		if out[0] == 0 {
			j := int(out[1]) - 1
			for _, i := range idx[:j] {
				vs[base+i] = verdict{ok: true}
			}
			i := idx[j]
			vs[base+i] = verdict{ahead: out[2] * int64(time.Microsecond)}
			e.refund(ctx, s, groups[:g], keys, args, clock)
			p.rules[i].count[resLimited].Inc()
			return decision{result: resLimited, rule: i, verdicts: vs}, true, nil
		}
		for k, i := range idx {
			vs[base+i] = verdict{ok: true, ahead: out[k+2] * int64(time.Microsecond)}
		}
	}
	for i := range p.rules {
		p.rules[i].count[resAllowed].Inc()
	}
	return decision{result: resAllowed, verdicts: vs}, true, nil
}

// refund gives back what the groups' calls charged. It has a deadline of
// its own: the decision's may be what just ran out, and a refund that is
// lost leaves those buckets one token short until they refill. A failure
// is counted, not returned: the request's fate is already decided.
func (e *Engine) refund(ctx context.Context, s *snapshot, groups [][]int, keys []string, args, clock []any) {
	if len(groups) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.redisTimeout)
	defer cancel()
	for _, idx := range groups {
		gk := make([]string, 0, len(idx)+1)
		ga := make([]any, 0, len(idx)+1+len(clock))
		ga = append(ga, len(idx))
		for _, i := range idx {
			gk = append(gk, keys[i])
			ga = append(ga, args[2*i])
		}
		gk = append(gk, onceKey(gk[0]))
		ga = append(ga, clock...)
		if err := refundScript.Run(ctx, e.be.client, gk, ga...).Err(); err != nil {
			e.be.m.BackendError("refund").Inc()
		}
	}
}

// slotGroups groups key indexes by their Redis Cluster slot, in the order
// of each slot's first key.
func slotGroups(keys []string) [][]int {
	var groups [][]int
	var slots []uint16
	for i, k := range keys {
		sl := keySlot(k)
		g := 0
		for g < len(slots) && slots[g] != sl {
			g++
		}
		if g == len(slots) {
			slots = append(slots, sl)
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// keySlot is Redis Cluster's slot of key: CRC16 (XMODEM) of its hash tag,
// the part between the first '{' and the next '}' when not empty, else of
// the whole key, modulo 16384.
func keySlot(key string) uint16 {
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return crc16(key) % 16384
			}
		}
		break
	}
	return crc16(key) % 16384
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
