"""Human evaluation: blinded exports for raters, validated label imports, human metrics and agreement.

Owns the export and key files (:mod:`.blind`), reading a filled-in file against its key (:mod:`.labels`),
the human metrics computed from stored labels (:mod:`.metrics`), storing an import in one transaction
(:mod:`.store`), and the agreement statistics: Krippendorff's alpha between raters and Cohen's kappa between
a judge and the raters (:mod:`.agreement`).
"""
