"""A node started with the wrong cookie (issue 16, item 4): it redials with
a long backoff (1 s doubling up to 60 s, not 100 ms up to 2 s), and both
sides say once, in words an operator can act on, that the cookies differ;
further attempts are counted in cluster_links_refused, not logged.
"""

import re
import time

from test_cluster import cluster, wait_until  # noqa: F401

WINDOW_S = 6.0


def lines(log, pattern):
    return [ln for ln in log.splitlines() if re.search(pattern, ln)]


def test_wrong_cookie_backs_off_and_is_logged_once_on_each_side(cluster):
    good = cluster.node("good")
    started = time.monotonic()
    bad = cluster.node("bad", peers=[good], cookie="not-the-secret")
    wait_until(lambda: good.stat("cluster_links_refused") >= 2, WINDOW_S,
               what=lambda: "two refused attempts on the good node: "
               f"{good.log()}")
    # What matters is how little happens in the rest of the window.
    time.sleep(max(0.0, started + WINDOW_S - time.monotonic()))
    good_log, bad_log = good.log(), bad.log()

    # The dialing side names the node, its address and what to check, once.
    said = lines(bad_log, r"(?i)cookie")
    assert len(said) == 1, bad_log
    assert re.search(r"node good at 127\.0\.0\.1:%d has a different cookie"
                     % good.cport, said[0]), said
    assert "--cookie" in said[0] and "MOONROOM_COOKIE" in said[0], said
    assert len(lines(bad_log, r"(?i)refused|authenticat")) == 1, bad_log

    # The accepting side names the address, the node and the reason, once,
    # and no longer logs each attempt as "closed by the peer".
    said = lines(good_log, r"(?i)cookie")
    assert len(said) == 1, good_log
    assert re.search(r"link from 127\.0\.0\.1 refused: wrong cookie "
                     r"\(node bad\b", said[0]), said
    assert "--cookie" in said[0] and "MOONROOM_COOKIE" in said[0], said
    assert not lines(good_log, r"closed by the peer"), good_log
    assert len(lines(good_log, r"(?i)refused")) == 1, good_log

    # Backoff from 1 s: at most 0, ≤1, ≤3, ≤7 s, i.e. 3 or 4 attempts in
    # 6 s (the 100 ms..2 s network backoff made 7 or more); every one is
    # counted on both sides.
    attempts = good.stat("cluster_links_refused")
    assert 2 <= attempts <= 4, good_log
    assert abs(bad.stat("cluster_links_refused") - attempts) <= 1, bad_log
    assert good.peers() == [] and bad.peers() == []
