"""How results look: table/json/csv output (output), the rich terminal rendering (render), a run's reports
as tables (run_details), the self-contained HTML report (report, report_data, report_html) and PNG plots
(plots). Used by the CLI and by the flows' Prefect artifacts.

May import every core layer (inputs, judging, db, the pipeline's identity functions); never
posteval.cli, the flows, the tasks or Prefect.
"""
