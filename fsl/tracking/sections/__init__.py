"""The report sections of each kind of study, one module each; each registers its section on import
(fsl.tracking.report_section.register_section). A new kind of study adds its module here."""

from fsl.tracking.sections import ablation, lr_augment, office_settings

__all__ = ["ablation", "lr_augment", "office_settings"]
