"""Per-mailbox sending budgets shared by every instance, behind one question: ``budget.admit(mailbox,
recipients) -> Admission`` (may this mailbox send now, and if not, when and why?) and one report,
``budget.release(admission)`` when Graph has answered. The Table row (budget_row) and one instance's view of
it (budget_view) are this package's own business: no other package imports them.

May import: base
"""
