package stream

import (
	"context"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

var _ queue.ItemAdmin = (*Admin)(nil)

// scanBatch is how many entries one XRANGE of an item's search reads.
const scanBatch = 1000

// RequeueItem moves the oldest dead-lettered entry whose item is item to the end of the
// stream, with a fresh count of attempts, atomically; false if <stream>:failed holds none.
func (a *Admin) RequeueItem(ctx context.Context, item string) (bool, error) {
	failed := FailedKey(a.o.Stream)
	for {
		id, err := a.findEntry(ctx, failed, "-", item)
		if err != nil || id == "" {
			return false, err
		}
		n, err := requeueEntryScript.Run(ctx, a.redis(), []string{failed, a.o.Stream}, id, item).Int()
		if err != nil {
			return false, ClientError(a.o, err)
		}
		if n == 1 {
			return true, nil
		}
		// Another qj took it meanwhile: look again.
	}
}

// DropItem deletes the next entry whose item is item among those not yet delivered to the
// group (never a pending one: the check and the delete are one script), else the oldest
// such dead letter. It names the stream it was deleted from; "" if neither holds one.
func (a *Admin) DropItem(ctx context.Context, item string) (string, error) {
	after, err := a.lastDelivered(ctx)
	if err != nil {
		return "", err
	}
	for _, from := range []struct{ key, start, group string }{
		{a.o.Stream, after, a.o.Group}, {FailedKey(a.o.Stream), "-", ""},
	} {
		ok, err := a.dropFrom(ctx, from.key, from.start, from.group, item)
		if err != nil {
			return "", err
		}
		if ok {
			return from.key, nil
		}
	}
	return "", nil
}

// dropFrom deletes the first entry of key from start whose item is item, unless a
// consumer of group ("": none) holds it; false if there is none.
func (a *Admin) dropFrom(ctx context.Context, key, start, group, item string) (bool, error) {
	for {
		id, err := a.findEntry(ctx, key, start, item)
		if err != nil || id == "" {
			return false, err
		}
		n, err := dropEntryScript.Run(ctx, a.redis(), []string{key}, id, item, group).Int()
		if err != nil {
			return false, ClientError(a.o, err)
		}
		if n == 1 {
			return true, nil
		}
		// Delivered or deleted meanwhile: look further on.
		start = "(" + id
	}
}

// lastDelivered is where the entries not yet delivered to the group start: "(" and the
// group's last delivered ID, or "-" (every entry) if the group does not exist.
func (a *Admin) lastDelivered(ctx context.Context) (string, error) {
	groups, err := a.redis().XInfoGroups(ctx, a.o.Stream).Result()
	if isNoGroup(err) {
		return "-", nil
	}
	if err != nil {
		return "", ClientError(a.o, err)
	}
	for _, g := range groups {
		if g.Name == a.o.Group {
			return "(" + g.LastDeliveredID, nil
		}
	}
	return "-", nil
}

// findEntry is the ID of the first entry of key from start (an XRANGE start) whose item
// is item; "" if none.
func (a *Admin) findEntry(ctx context.Context, key, start, item string) (string, error) {
	for {
		ms, err := a.redis().XRangeN(ctx, key, start, "+", scanBatch).Result()
		if err != nil {
			return "", ClientError(a.o, err)
		}
		for _, m := range ms {
			if v, ok := m.Values[FieldItem].(string); ok && v == item {
				return m.ID, nil
			}
		}
		if len(ms) < scanBatch {
			return "", nil
		}
		start = "(" + ms[len(ms)-1].ID
	}
}
