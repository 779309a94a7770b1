"""USB drives: finding them (pyudev), classifying, mounting and formatting them."""
