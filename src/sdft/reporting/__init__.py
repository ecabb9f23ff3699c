"""The experiment report (markdown + self-contained HTML): :mod:`sdft.reporting.report` collects what the stages
wrote and lays it out; :mod:`~sdft.reporting.verdict` opens it with the answer (verdict, go/no-go gate, forest
plot), :mod:`~sdft.reporting.paired` holds the paired tests between arms, :mod:`~sdft.reporting.retention` the
retention tables and plots."""
