"""Receipts through python-escpos over a serial pty, read back by the printer emulator."""

from __future__ import annotations

from escpos.printer import Dummy

from simulators.escpos_printer import EscPosDecoder, EscPosPrinterEmulator
from terminal_fw.printer import Receipt, ReceiptPrinter


def test_receipt_with_chinese_money_and_qr_reads_back():
    receipt = Receipt(
        title="OneCard",
        lines=(("会员 Member", "M00001"), ("次数 Visits", "9")),
        amounts_fen={"消费 Paid": 8_800, "余额 Balance": 101_200},
        footer="谢谢光临 Thank you",
        qr="rec:gate-01:42",
    )
    with EscPosPrinterEmulator() as emu:
        with ReceiptPrinter(emu.path) as printer:
            printer.print_receipt(receipt)
            printer.print_receipt(Receipt(title="Second"))
        receipts = emu.wait_for_receipts(2)
    first = receipts[0]
    assert first[0] == "OneCard"
    assert any(line.startswith("会员 Member") and line.endswith("M00001") for line in first)
    assert any(line.startswith("消费 Paid") and line.endswith("88.00") for line in first)
    assert any(line.startswith("余额 Balance") and line.endswith("1012.00") for line in first)
    assert "谢谢光临 Thank you" in first
    assert first[-1] == "[QR rec:gate-01:42]"
    assert receipts[1][0] == "Second"
    assert emu.decoder.unknown == 0


def test_decoder_reads_other_tools_output():
    """What another ESC/POS client sends (python-escpos directly: barcode, feed, cut)."""
    p = Dummy()
    p.hw("INIT")
    p.set(bold=True)
    p.text("Ticket 7\n")
    p.barcode("1234567890128", "EAN13", function_type="A")
    p.ln(2)
    p.cut(mode="PART")
    decoder = EscPosDecoder()
    for i in range(0, len(p.output), 3):  # bytes arrive in pieces on a serial line
        decoder.feed(p.output[i:i + 3])
    assert decoder.receipts[0][0] == "Ticket 7"
    assert "[BARCODE 1234567890128]" in decoder.receipts[0]
    assert decoder.unknown == 0
