"""``make bench``: measure the real connector process end to end on loopback (see ``__main__``)."""
