"""Per-mailbox sending budgets shared by every instance, behind one door (shared/pacing/admission.py): one
question per attempt, ``pacer.admit(mailbox, recipients) -> Admission`` (may this mailbox send now, and if not,
when and why?), and one report, ``admission.report()``, when Graph has answered or the attempt ended before
it. The budget (budget.py), its Table row (budget_row) and one instance's view of it (budget_view) are this
package's own business: other packages import only the door; the composition root alone builds the budget.

Door: admission
May import: base
"""
