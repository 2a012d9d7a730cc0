# Issue #12, HQ in domain packages: old module / name -> new. Most specific first.
# Run with GNU sed -i -f RENAMES.sed over .py and .md files. A from-import that
# names several moved names at once may need splitting by hand (ruff / ImportError).
#
# 1. names that moved to another module than their module's default
s/^\([ \t]*\)from hq_server\.schema import open_engine$/\1from hq_server.db.engine import open_engine/
s/\bhq_server\.schema\.open_engine\b/hq_server.db.engine.open_engine/g
s/^\([ \t]*\)from hq_server\.ledger import dialect_insert$/\1from hq_server.db.bulk import dialect_insert/
s/\bhq_server\.ledger\.dialect_insert\b/hq_server.db.bulk.dialect_insert/g
s/^\([ \t]*\)from hq_server\.ledger import bulk_execute$/\1from hq_server.db.bulk import bulk_execute/
s/\bhq_server\.ledger\.bulk_execute\b/hq_server.db.bulk.bulk_execute/g
s/^\([ \t]*\)from hq_server\.ledger import copy_rows$/\1from hq_server.db.bulk import copy_rows/
s/\bhq_server\.ledger\.copy_rows\b/hq_server.db.bulk.copy_rows/g
s/^\([ \t]*\)from hq_server\.ledger import check_ledger$/\1from hq_server.ledger.check import check_ledger/
s/\bhq_server\.ledger\.check_ledger\b/hq_server.ledger.check.check_ledger/g
s/^\([ \t]*\)from hq_server\.ledger import LedgerCheck$/\1from hq_server.ledger.check import LedgerCheck/
s/\bhq_server\.ledger\.LedgerCheck\b/hq_server.ledger.check.LedgerCheck/g
s/^\([ \t]*\)from hq_server\.ledger import account_balance$/\1from hq_server.reports.figures import account_balance/
s/\bhq_server\.ledger\.account_balance\b/hq_server.reports.figures.account_balance/g
s/^\([ \t]*\)from hq_server\.ledger import ingest_figures$/\1from hq_server.reports.figures import ingest_figures/
s/\bhq_server\.ledger\.ingest_figures\b/hq_server.reports.figures.ingest_figures/g
s/^\([ \t]*\)from hq_server\.postings import postings_for$/\1from hq_server.ledger.postings import postings_for/
s/\bhq_server\.postings\.postings_for\b/hq_server.ledger.postings.postings_for/g
s/^\([ \t]*\)from hq_server\.postings import suspense_postings$/\1from hq_server.ledger.postings import suspense_postings/
s/\bhq_server\.postings\.suspense_postings\b/hq_server.ledger.postings.suspense_postings/g
s/^\([ \t]*\)from hq_server\.ingest import advance$/\1from hq_server.ingest.acks import advance/
s/\bhq_server\.ingest\.advance\b/hq_server.ingest.acks.advance/g
s/^\([ \t]*\)from hq_server\.ingest import gap_report$/\1from hq_server.ingest.acks import gap_report/
s/\bhq_server\.ingest\.gap_report\b/hq_server.ingest.acks.gap_report/g
s/^\([ \t]*\)from hq_server\.ingest import MAX_MISSING_REPORTED$/\1from hq_server.ingest.acks import MAX_MISSING_REPORTED/
s/\bhq_server\.ingest\.MAX_MISSING_REPORTED\b/hq_server.ingest.acks.MAX_MISSING_REPORTED/g
s/^\([ \t]*\)from hq_server\.ingest import QuarantineLimits$/\1from hq_server.ingest.quarantine import QuarantineLimits/
s/\bhq_server\.ingest\.QuarantineLimits\b/hq_server.ingest.quarantine.QuarantineLimits/g
s/^\([ \t]*\)from hq_server\.ingest import QUARANTINE_WIRE_KEPT$/\1from hq_server.ingest.quarantine import QUARANTINE_WIRE_KEPT/
s/\bhq_server\.ingest\.QUARANTINE_WIRE_KEPT\b/hq_server.ingest.quarantine.QUARANTINE_WIRE_KEPT/g
s/^\([ \t]*\)from hq_server\.ingest import QUARANTINE_MEMORY$/\1from hq_server.ingest.quarantine import QUARANTINE_MEMORY/
s/\bhq_server\.ingest\.QUARANTINE_MEMORY\b/hq_server.ingest.quarantine.QUARANTINE_MEMORY/g
s/^\([ \t]*\)from hq_server\.ingest import sender_of_topic$/\1from hq_server.ingest.verify import sender_of_topic/
s/\bhq_server\.ingest\.sender_of_topic\b/hq_server.ingest.verify.sender_of_topic/g
s/^\([ \t]*\)from hq_server\.ingest import bump$/\1from hq_server.ingest.storage import bump/
s/\bhq_server\.ingest\.bump\b/hq_server.ingest.storage.bump/g
s/^\([ \t]*\)from hq_server\.record_rules import release_device$/\1from hq_server.ingest.device_holds import release_device/
s/\bhq_server\.record_rules\.release_device\b/hq_server.ingest.device_holds.release_device/g
s/^\([ \t]*\)from hq_server\.reconciliation import ledger_view$/\1from hq_server.reconciliation.runs import ledger_view/
s/\bhq_server\.reconciliation\.ledger_view\b/hq_server.reconciliation.runs.ledger_view/g
s/^\([ \t]*\)from hq_server\.reconciliation import card_events$/\1from hq_server.reconciliation.runs import card_events/
s/\bhq_server\.reconciliation\.card_events\b/hq_server.reconciliation.runs.card_events/g
s/^\([ \t]*\)from hq_server\.reconciliation import reconcile_card_in_db$/\1from hq_server.reconciliation.runs import reconcile_card_in_db/
s/\bhq_server\.reconciliation\.reconcile_card_in_db\b/hq_server.reconciliation.runs.reconcile_card_in_db/g
s/^\([ \t]*\)from hq_server\.reconciliation import reconcile_due$/\1from hq_server.reconciliation.runs import reconcile_due/
s/\bhq_server\.reconciliation\.reconcile_due\b/hq_server.reconciliation.runs.reconcile_due/g
s/^\([ \t]*\)from hq_server\.reconciliation import open_anomalies$/\1from hq_server.reconciliation.runs import open_anomalies/
s/\bhq_server\.reconciliation\.open_anomalies\b/hq_server.reconciliation.runs.open_anomalies/g
s/^\([ \t]*\)from hq_server\.reconciliation import INGEST_KINDS$/\1from hq_server.reconciliation.runs import INGEST_KINDS/
s/\bhq_server\.reconciliation\.INGEST_KINDS\b/hq_server.reconciliation.runs.INGEST_KINDS/g
s/^\([ \t]*\)from hq_server\.reconciliation import anomaly_counts$/\1from hq_server.reports.figures import anomaly_counts/
s/\bhq_server\.reconciliation\.anomaly_counts\b/hq_server.reports.figures.anomaly_counts/g
s/^\([ \t]*\)from hq_server\.settlement import purse_movements$/\1from hq_server.settlement.runs import purse_movements/
s/\bhq_server\.settlement\.purse_movements\b/hq_server.settlement.runs.purse_movements/g
s/^\([ \t]*\)from hq_server\.settlement import period_matrix$/\1from hq_server.settlement.runs import period_matrix/
s/\bhq_server\.settlement\.period_matrix\b/hq_server.settlement.runs.period_matrix/g
s/^\([ \t]*\)from hq_server\.settlement import post_settlement$/\1from hq_server.settlement.runs import post_settlement/
s/\bhq_server\.settlement\.post_settlement\b/hq_server.settlement.runs.post_settlement/g
s/^\([ \t]*\)from hq_server\.denylist import publish_denylist$/\1from hq_server.fleet.service import publish_denylist/
s/\bhq_server\.denylist\.publish_denylist\b/hq_server.fleet.service.publish_denylist/g
# 2. renamed public names
s/\bhq_server\.ingest\._Rejected\b/hq_server.ingest.classify.Rejected/g
s/\bhq_server\.ledger\.apply_to_accounts\b/hq_server.ledger.writer.post/g
# 3. modules (old names that are packages now: only when not followed by a dot)
s/\bhq_server\.reconciliation\([^._a-zA-Z0-9]\|$\)/hq_server.reconciliation.rules\1/g
s/\bhq_server\.settlement\([^._a-zA-Z0-9]\|$\)/hq_server.settlement.rules\1/g
s/\bhq_server\.catalogue\([^._a-zA-Z0-9]\|$\)/hq_server.catalogue.versions\1/g
s/\bhq_server\.operators\([^._a-zA-Z0-9]\|$\)/hq_server.operators.accounts\1/g
s/\bhq_server\.devices\([^._a-zA-Z0-9]\|$\)/hq_server.devices.registry\1/g
s/\bhq_server\.ledger\([^._a-zA-Z0-9]\|$\)/hq_server.ledger.writer\1/g
s/\bhq_server\.ingest\([^._a-zA-Z0-9]\|$\)/hq_server.ingest.batch\1/g
s/\bhq_server\.uid_credentials\b/hq_server.devices.uid_credentials/g
s/\bhq_server\.fleet_commands\b/hq_server.fleet.service/g
s/\bhq_server\.ingest_worker\b/hq_server.ingest.worker/g
s/\bhq_server\.record_rules\b/hq_server.ingest.record_rules/g
s/\bhq_server\.migrations\b/hq_server.db.migrations/g
s/\bhq_server\.enrolment\b/hq_server.devices.enrolment/g
s/\bhq_server\.postings\b/hq_server.ledger.accounts/g
s/\bhq_server\.presence\b/hq_server.devices.presence/g
s/\bhq_server\.denylist\b/hq_server.devices.denylist/g
s/\bhq_server\.schema\b/hq_server.db.tables/g
# 4. file paths (docs, comments)
s#\bhq_server/uid_credentials\.py\b#hq_server/devices/uid_credentials.py#g
s#\bhq_server/reconciliation\.py\b#hq_server/reconciliation/rules.py#g
s#\bhq_server/fleet_commands\.py\b#hq_server/fleet/service.py#g
s#\bhq_server/ingest_worker\.py\b#hq_server/ingest/worker.py#g
s#\bhq_server/record_rules\.py\b#hq_server/ingest/record_rules.py#g
s#\bhq_server/migrations/#hq_server/db/migrations/#g
s#\bhq_server/settlement\.py\b#hq_server/settlement/rules.py#g
s#\bhq_server/enrolment\.py\b#hq_server/devices/enrolment.py#g
s#\bhq_server/catalogue\.py\b#hq_server/catalogue/versions.py#g
s#\bhq_server/operators\.py\b#hq_server/operators/accounts.py#g
s#\bhq_server/postings\.py\b#hq_server/ledger/accounts.py#g
s#\bhq_server/presence\.py\b#hq_server/devices/presence.py#g
s#\bhq_server/denylist\.py\b#hq_server/devices/denylist.py#g
s#\bhq_server/devices\.py\b#hq_server/devices/registry.py#g
s#\bhq_server/schema\.py\b#hq_server/db/tables.py#g
s#\bhq_server/ledger\.py\b#hq_server/ledger/writer.py#g
s#\bhq_server/ingest\.py\b#hq_server/ingest/batch.py#g
s#\btests/test_\(api_problems\|enrolment\|enrolment_cli\|fleet_hostile\|ingest_hostile\|ingest_presence\|ingest_rules\|ingest_workers\|ledger\|ledger_chain\|ledger_cli\|ledger_migrations\|ledger_properties\|quarantine\|reconciliation\|record_rules\|settlement\|supervision\|uid_credentials\|ingest_classify\)\.py\b#tests/hq_server/test_\1.py#g
