"""Runs at power-on on the Pico (and under the unix port's fake machine in tests)."""

import gate_board

gate_board.main()
