# Where redis-server's main thread spent each client gap, from `perf sched timehist --state` recorded
# with -k mono (so its times are CLOCK_MONOTONIC, like livesnap's debug lines and pingloop's gaps).
#
#   perf sched timehist -i FILE --state | python3 schedgaps.py REDIS_PID DEBUG_OUT GAPS_OUT
#
# Per gap: ms running; ms runnable but off the CPU; ms asleep, by the state it went to sleep in (S:
# waiting for something, such as a userfault to be served or a client; D: uninterruptible, such as
# a lock); and what else ran on the machine's CPUs in the gap. Used by timeline.sh (SCHED_TRACE).
import collections
import re
import sys

tid = sys.argv[1]
t0 = None
for line in open(sys.argv[2]):
    m = re.match(r'livesnap-debug: \[([0-9.]+)\]', line)
    if m:
        t0 = float(m.group(1))
        break
gaps = []
for line in open(sys.argv[3]):
    m = re.match(r'gap (\d+) ends ([0-9.]+)', line)
    if m:
        end = float(m.group(2))
        gaps.append((end - int(m.group(1)) / 1e6, end))

# timehist: time cpu task wait delay run state, one line per switch-out; the wait and the delay
# came before the run; the state is the one the task left the CPU in, so the state of a line's
# wait is the previous line's (of the same task).
row = re.compile(r'\s*([0-9.]+)\s+\[(\d+)\]\s+(.*?)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+(\S+)\s*$')
spans = []  # (start, end, kind, task)
prev_state = {}
for line in sys.stdin:
    m = row.match(line)
    if not m:
        continue
    t, _cpu, task, wait, delay, run, state = m.groups()
    t, wait, delay, run = float(t), float(wait) / 1e3, float(delay) / 1e3, float(run) / 1e3
    spans.append((t - run, t, 'run', task))
    spans.append((t - run - delay, t - run, 'delay', task))
    spans.append((t - run - delay - wait, t - run - delay, 'sleep-' + prev_state.get(task, '?'), task))
    prev_state[task] = state


def overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


me = '[%s]' % tid
for g0, g1 in gaps:
    mine = collections.Counter()
    others = collections.Counter()
    for s0, s1, kind, task in spans:
        o = overlap(s0, s1, g0, g1)
        if o <= 0:
            continue
        if task.endswith(me):
            mine[kind] += o
        elif kind == 'run' and '<idle>' not in task:
            others[re.sub(r'\[.*', '', task)] += o
    slept = ', '.join('%s %.0f' % (k[6:], v * 1e3) for k, v in sorted(mine.items()) if k.startswith('sleep'))
    print('%8.3f s  gap %4.0f: ran %4.0f, runnable %4.0f, asleep %s; others ran: %s' % (
        g0 - (t0 or 0), (g1 - g0) * 1e3, mine['run'] * 1e3, mine['delay'] * 1e3, slept or '0',
        ', '.join('%s %.0f' % (k, v * 1e3) for k, v in others.most_common(6))))
