"""Word lists for the synthetic corpus: fake names, complaints, medications, templates.

Helper of :mod:`fedicd.data.synthetic`; data only, no logic. Every name here is
invented for the synthetic corpus and belongs to no real patient. Lists that
depend on the chapter are indexed like
:data:`fedicd.data.synthetic_catalogue.POOL_CHAPTERS`.
"""

from __future__ import annotations

__all__ = ["AGE_FORMATS", "COMPLAINTS", "COURSE_TEMPLATES", "DISCHARGE_LINES", "FINDING_LEADS",
           "FIRST_NAMES_F", "FIRST_NAMES_M", "FOLLOW_UP_LINES", "FREQUENCY_WORDS",
           "HEADER_FORMATS", "HEADINGS", "HISTORY_LEADS", "LAST_NAMES", "MEDICATIONS",
           "NEGATION_TEMPLATES", "SEX_WORDS", "SPECIALTIES", "VITALS_FORMATS"]

FIRST_NAMES_F = (
    "Alice", "Beatrice", "Carmen", "Dolores", "Edith", "Fiona", "Gloria", "Harriet",
    "Irene", "Joanna", "Katrin", "Lorna", "Marisol", "Nadia", "Opal", "Priya",
    "Rosalind", "Sabine", "Tamsin", "Ursula", "Vera", "Wilhelmina", "Yolanda", "Zelda",
)
FIRST_NAMES_M = (
    "Albert", "Bernard", "Cyrus", "Desmond", "Emil", "Fergus", "Gideon", "Horace",
    "Ivan", "Jasper", "Kenji", "Leopold", "Mateo", "Nikolai", "Oswald", "Percival",
    "Quentin", "Rafael", "Silas", "Thaddeus", "Umberto", "Vikram", "Wendell", "Xavier",
)
LAST_NAMES = (
    "Abernathy", "Blackwood", "Castellanos", "Dunleavy", "Eriksen", "Fairweather",
    "Galloway", "Hargreaves", "Ingersoll", "Jablonski", "Kowalczyk", "Lindqvist",
    "Mancuso", "Nakamura", "Oyelaran", "Pemberton", "Quiroga", "Rasmussen",
    "Szczepanski", "Thornbury", "Underhill", "Valdivia", "Whitcombe", "Yamashita",
    "Zielinski", "Ashdown", "Brannigan", "Cavendish", "Delacroix", "Esterhazy",
)

COMPLAINTS = (
    ("fever", "fever and rigors", "chills"),
    ("weight loss", "fatigue", "abnormal imaging"),
    ("fatigue", "lightheadedness", "easy bruising"),
    ("hyperglycemia", "polyuria", "generalized weakness"),
    ("agitation", "depressed mood", "confusion"),
    ("headache", "new weakness", "a witnessed seizure"),
    ("chest pain", "shortness of breath", "palpitations", "leg swelling"),
    ("shortness of breath", "cough", "hypoxia"),
    ("abdominal pain", "nausea and vomiting", "dark stools"),
    ("rash", "a skin lesion", "wound drainage"),
    ("back pain", "joint pain", "a fall at home"),
    ("dysuria", "flank pain", "decreased urine output"),
    ("dizziness", "syncope", "weakness"),
)

# (name, strength, route, frequency abbreviation)
MEDICATIONS = (
    (("ceftriaxone", "1 g", "IV", "daily"), ("vancomycin", "1250 mg", "IV", "q12h"),
     ("azithromycin", "500 mg", "PO", "daily"), ("cefpodoxime", "200 mg", "PO", "BID")),
    (("ondansetron", "4 mg", "PO", "q8h PRN"), ("dexamethasone", "4 mg", "PO", "daily"),
     ("oxycodone", "5 mg", "PO", "q4h PRN")),
    (("ferrous sulfate", "325 mg", "PO", "daily"), ("folic acid", "1 mg", "PO", "daily"),
     ("cyanocobalamin", "1000 mcg", "PO", "daily")),
    (("metformin", "500 mg", "PO", "BID"), ("insulin glargine", "20 units", "SC", "qHS"),
     ("atorvastatin", "40 mg", "PO", "daily"), ("levothyroxine", "75 mcg", "PO", "daily")),
    (("sertraline", "50 mg", "PO", "daily"), ("quetiapine", "25 mg", "PO", "qHS"),
     ("thiamine", "100 mg", "PO", "daily"), ("trazodone", "50 mg", "PO", "qHS")),
    (("levetiracetam", "500 mg", "PO", "BID"), ("gabapentin", "300 mg", "PO", "TID"),
     ("aspirin", "81 mg", "PO", "daily")),
    (("lisinopril", "10 mg", "PO", "daily"), ("metoprolol succinate", "50 mg", "PO", "daily"),
     ("furosemide", "40 mg", "PO", "daily"), ("apixaban", "5 mg", "PO", "BID"),
     ("amlodipine", "5 mg", "PO", "daily")),
    (("albuterol inhaler", "2 puffs", "INH", "q4h PRN"), ("tiotropium", "18 mcg", "INH", "daily"),
     ("prednisone", "40 mg", "PO", "daily"), ("guaifenesin", "600 mg", "PO", "BID")),
    (("pantoprazole", "40 mg", "PO", "daily"), ("lactulose", "30 mL", "PO", "TID"),
     ("docusate", "100 mg", "PO", "BID")),
    (("mupirocin ointment", "1 application", "TOP", "BID"),
     ("triamcinolone cream", "1 application", "TOP", "BID"), ("cephalexin", "500 mg", "PO", "QID")),
    (("acetaminophen", "650 mg", "PO", "q6h PRN"), ("lidocaine patch", "1 patch", "TOP", "daily"),
     ("alendronate", "70 mg", "PO", "weekly")),
    (("tamsulosin", "0.4 mg", "PO", "qHS"), ("nitrofurantoin", "100 mg", "PO", "BID"),
     ("oxybutynin", "5 mg", "PO", "BID")),
    (("acetaminophen", "650 mg", "PO", "q6h PRN"), ("meclizine", "25 mg", "PO", "TID PRN")),
)
FREQUENCY_WORDS = {
    "daily": "once daily", "BID": "twice daily", "TID": "three times daily", "QID": "four times daily",
    "qHS": "at bedtime", "q4h PRN": "every 4 hours as needed", "q6h PRN": "every 6 hours as needed",
    "q8h PRN": "every 8 hours as needed", "q12h": "every 12 hours", "weekly": "once weekly",
    "TID PRN": "three times daily as needed",
}

SPECIALTIES = ("infectious disease", "oncology", "hematology", "endocrinology", "psychiatry",
               "neurology", "cardiology", "pulmonology", "gastroenterology", "dermatology",
               "orthopedics", "urology", "the primary team")

# Section heading variants: one is chosen per site.
HEADINGS = {
    "cc": ("Chief Complaint:", "CHIEF COMPLAINT:", "CC:", "Reason for Admission:"),
    "hpi": ("History of Present Illness:", "HISTORY OF PRESENT ILLNESS:", "HPI:", "History:"),
    "course": ("Brief Hospital Course:", "HOSPITAL COURSE:", "Hospital Course:",
               "Course in Hospital:"),
    "dx": ("Discharge Diagnosis:", "DISCHARGE DIAGNOSES:", "Final Diagnoses:",
           "Diagnoses at Discharge:"),
    "meds": ("Discharge Medications:", "DISCHARGE MEDICATIONS:", "Medications on Discharge:",
             "Meds at discharge:"),
}

HEADER_FORMATS = (
    ("Name:  {last}, {first}          Unit No:   {mrn}\n"
     "Admission Date:  {adm}          Discharge Date:   {dis}\n"
     "Date of Birth:  {dob}          Sex:   {sex}\nService: {service}"),
    "PATIENT: {first} {last}\nMRN: {mrn}\nDOB: {dob}\nADMITTED: {adm}    DISCHARGED: {dis}",
    ("Patient Name: {last}, {first} | Medical Record #: {mrn} | DOB: {dob}\n"
     "Admit: {adm} | Discharge: {dis} | Service: {service}"),
)

AGE_FORMATS = ("{age} y/o", "{age}-year-old", "{age} yo", "{age} year old")
SEX_WORDS = (("woman", "man"), ("female", "male"), ("F", "M"), ("lady", "gentleman"))
HISTORY_LEADS = ("with a history of", "with PMH of", "with h/o",
                 "with a past medical history significant for")
FINDING_LEADS = ("{Pro} was found to have {m}.", "Admission workup revealed {m}.",
                 "On arrival {pro} was noted to have {m}.", "Initial evaluation was consistent with {m}.")

COURSE_TEMPLATES = (
    "{M} was managed with {med}.",
    "For {m}, {pro} was started on {med}.",
    "# {M}: treated with {med}; {spec} followed.",
    "{Spec} was consulted for {m} and recommended {med}.",
    "{M} remained stable, {med} was continued.",
    "Regarding {m}, {pro} received {med} with improvement.",
)
NEGATION_TEMPLATES = (
    "Imaging showed no evidence of {x}.",
    "Labs were negative for {x}.",
    "{X} was ruled out.",
    "{Pro} denies any history of {x}.",
    "Exam was without signs of {x}.",
    "Workup did not suggest {x}.",
)
DISCHARGE_LINES = (
    "{Title} {last} was discharged home in stable condition on {dis}.",
    "{first} {last} left the hospital on {dis} with follow-up arranged.",
    "Discharged to rehab on {dis}; {Title} {last} agreed with the plan.",
)
VITALS_FORMATS = (
    "Vitals on admission: T {t} HR {hr} BP {sbp}/{dbp} RR {rr} SpO2 {spo2}% on RA.",
    ("On presentation temperature was {t}, heart rate {hr}, blood pressure {sbp}/{dbp}, "
     "respiratory rate {rr} and oxygen saturation {spo2}% on room air."),
    "Admission vitals notable for BP {sbp}/{dbp}, HR {hr}, T {t}, RR {rr}, sat {spo2}%.",
)
FOLLOW_UP_LINES = (
    "Follow up with {spec} in {weeks} weeks and with the primary care physician.",
    "Please arrange {spec} clinic follow-up within {weeks} weeks; labs to be checked before the visit.",
    "Outpatient follow-up: {spec} in {weeks} weeks, PCP in 1 week.",
)
