"""This board's wiring and safety settings (edit on the board, then reset it).

GPIO numbers are the RP2040's (GP0..GP28); docs/ioboard.md has the wiring table.
"""

UART_ID = 0
UART_TX = 0  # GP0 -> the Pi's RXD (GPIO15)
UART_RX = 1  # GP1 <- the Pi's TXD (GPIO14)
BAUDRATE = 115200

RELAY = 15  # the turnstile's unlock input, through a driver transistor; high = released
GREEN = 16
RED = 17
BUZZER = 18
PASSAGE_SENSOR = 20  # the turnstile's "passage complete" output; high while the arm turns
FORCED_SENSOR = 21  # door-forced contact; high while forced

#: What the door does when the terminal stops talking: 0 locked (the default), 1 free
#: passage (fire exits: the door must open for everyone when the terminal is gone).
SAFE_STATE = 0
#: The terminal sends STATUS every second; after this long without a valid frame the
#: board goes to SAFE_STATE.
LINK_TIMEOUT_MS = 3000
#: The longest a door may stay open for one passage, whatever the terminal asks.
MAX_OPEN_MS = 30000
#: A sensor must hold a level this long to count (contact bounce).
DEBOUNCE_MS = 10
#: The passage sensor active this long with the door locked: it is stuck.
STUCK_MS = 3000
WATCHDOG_MS = 2000
