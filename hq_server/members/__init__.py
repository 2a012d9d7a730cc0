"""Members (会员资料): the profile venue chains keep, custom fields, search as operators
search (card, phone, name, pinyin initials, ID number), import and export, merging.

* :mod:`.normalise` — mobile numbers (E.164), names folded and in pinyin (pure)
* :mod:`.profile` — the profile's fields and the rules a write is checked against (pure)
* :mod:`.custom_fields` — operator-defined fields and their values (pure)
* :mod:`.card_link` — the join from the card registry to members (cards → member)
* :mod:`.activity` — visits, spend and last visit, derived from the ledger
* :mod:`.service` — register, edit, delete/restore, merge, search; authorised, audited
* :mod:`.transfer` — import and export as CSV and XLSX, with a dry run
"""
